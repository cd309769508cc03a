"""How a run finds its request and the URL it clones (pure logic)."""

from datetime import UTC, datetime

import pytest

from repovault_pipeline.core.common.identity import InvalidRepoUrl
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.runs import (
    default_url_hint,
    missing_run_tags,
    repo_id_host,
    request_of_run,
    request_tags,
    resolve_clone_ref,
)

SETTINGS = Settings.from_env({"REPOVAULT_ALLOWED_HOSTS": "github.com,127.0.0.1"})


def test_a_requested_run_carries_its_request() -> None:
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    tags = request_tags("req-1", "https://github.com/a/b", "kafka", at)
    info = request_of_run(tags, "run-1")
    assert (info.request_id, info.source, info.repo_url, info.requested_at) == (
        "req-1",
        "kafka",
        "https://github.com/a/b",
        at,
    )
    assert tags["repovault/host"] == "github.com"
    assert request_tags("r", "http://127.0.0.1:8080/a/b.git", "cli", at)["repovault/host"] == (
        "127.0.0.1:8080"
    )
    assert request_tags("r", "ssh://git@gitlab.com/g/s/p.git", "cli", at)["repovault/host"] == (
        "gitlab.com"
    )


def test_runs_from_the_ui_or_a_backfill_get_a_stable_request_of_their_own() -> None:
    ui = request_of_run({}, "run-1")
    assert ui.source == "ui" and ui.repo_url is None
    assert request_of_run({}, "run-1").request_id == ui.request_id  # every step, same row
    assert request_of_run({}, "run-2").request_id != ui.request_id
    assert request_of_run({"dagster/backfill": "abc"}, "run-3").source == "backfill"


def test_clone_url_falls_back_to_https_of_the_repo_id() -> None:
    assert resolve_clone_ref("github.com/a/b", None, SETTINGS).url == "https://github.com/a/b.git"
    last = resolve_clone_ref("github.com/a/b", "git@github.com:a/b.git", SETTINGS)
    assert last.url == "ssh://git@github.com/a/b.git"


def test_a_url_that_names_another_repository_is_refused() -> None:
    with pytest.raises(InvalidRepoUrl, match=r"not partition github\.com/a/b"):
        resolve_clone_ref("github.com/a/b", "https://github.com/a/c", SETTINGS)


def test_every_archive_run_gets_its_host_and_maximum_runtime() -> None:
    settings = Settings.from_env({"REPOVAULT_RUN_TIMEOUT_S": "90"})
    asset_page = {"dagster/partition": "127.0.0.1:8080/team/app"}
    assert missing_run_tags(asset_page, settings) == {
        "dagster/max_runtime": "90",
        "repovault/host": "127.0.0.1:8080",
    }
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    sensor = {
        **request_tags("r", "ssh://git@GitLab.com/g/s/p.git", "track", at),
        "dagster/partition": "gitlab.com/g/s/p",
        "dagster/max_runtime": "5400",
    }
    assert missing_run_tags(sensor, settings) == {}
    # The host a partition gives is the one its URL's tag gives.
    assert repo_id_host("gitlab.com/g/s/p") == sensor["repovault/host"]
    assert missing_run_tags({}, settings) == {"dagster/max_runtime": "90"}


def test_a_default_url_failure_says_how_to_give_the_url() -> None:
    hint = default_url_hint("git.example.com/team/app")
    assert "https://git.example.com/team/app.git was cloned" in hint
    assert "run tag repovault/repo_url=<clone URL>" in hint
