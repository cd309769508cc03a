"""`repo_metadata` in `archive_repo_job`: after the archive, the forge's metadata is read from a
GitHub-shaped API on loopback and the forge stamp listed before it is recorded for refresh; a
rate limit fails the step with its reason, keeps the archive and the recorded stamp as they
were, and turns the request `partial` (`metadata_failed`) in its row, the API, `completados`
and the statistics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, instance_for_test

from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.support.api import make_token, serve_command, session
from tests.support.forge_metadata import FakeGitHub
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.servers import serving


@pytest.fixture
def instance(vault_env: dict[str, str]) -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def run_job(instance: DagsterInstance, repo: ServedRepo, keep: dict[str, bool] | None = None):
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    requested = now()
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(repo.url, repo_id, "cli", created_at=requested)
    job = defs.resolve_job_def("archive_repo_job")
    result = job.execute_in_process(
        partition_key=repo_id,
        instance=instance,
        tags=request_tags(request_id, repo.url, "cli", requested, keep),
        raise_on_error=False,
    )
    return result, lineage.get(request_id)


def test_metadata_is_materialized_after_the_archive_and_a_rate_limit_is_reported(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("tool")
    repo.commit({"README.md": "hello\n"})
    repo.push()
    owner = repo.url.rsplit("/", 2)[1]
    forge = FakeGitHub(owner, "tool")
    forge.add_issue("first issue")
    forge.add_release("v1", "tool.tar.gz", b"tarball")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "on")
    # As the listing of a tracked source records it: the forge's activity stamp.
    fleet = FleetStore(open_lineage(os.environ["REPOVAULT_DB_URL"]).engine)
    fleet.add_repos("github-org:127.0.0.1/" + owner, [(repo.repo_id, repo.url)], now())
    fleet.record_stamps({repo.repo_id: "2026-01-01T00:00:00Z"})
    try:
        result, row = run_job(instance, repo)
        assert result.success and row.status == "completed"
        [state] = fleet.get([repo.repo_id])
        assert state.metadata_stamp == "2026-01-01T00:00:00Z"  # refresh compares it
        [meta] = result.asset_materializations_for_node("repo_metadata")
        assert meta.partition == repo.url.removeprefix("http://").removesuffix(".git")
        assert meta.metadata["outcome"].value == "completed"
        assert meta.metadata["records"].value >= 4  # issue, label, milestone, release
        assert meta.metadata["assets_uploaded"].value == 1

        forge.add_issue("second issue", minutes_ago=0)
        fleet.record_stamps({repo.repo_id: "2026-01-02T00:00:00Z"})
        forge.rate_limit_after = len(forge.log)
        failed, row = run_job(instance, repo)

        assert not failed.success
        assert row.status == "partial"  # the archive itself went through, the metadata not
        assert list(row.reasons) == ["metadata_failed"]
        assert "rate limit reached" in row.reasons["metadata_failed"]
        [state] = fleet.get([repo.repo_id])
        assert state.metadata_stamp == "2026-01-01T00:00:00Z"  # the next refresh asks again
        failures = [
            e.event_specific_data.error.message
            for e in failed.all_events
            if e.event_type == DagsterEventType.STEP_FAILURE
        ]
        assert any("rate limit reached" in m and "resets at" in m for m in failures)
        assert not failed.asset_materializations_for_node("repo_metadata")
    finally:
        forge.close()


def test_without_a_token_metadata_is_not_kept_by_default(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("quiet")
    repo.commit({"README.md": "hello\n"})
    repo.push()
    forge = FakeGitHub(repo.url.rsplit("/", 2)[1], "quiet")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    try:
        result, row = run_job(instance, repo)
        assert result.success and row.status == "completed"
        assert not result.asset_materializations_for_node("repo_metadata")
        assert forge.log == []  # the forge was not asked
    finally:
        forge.close()


def test_a_request_chooses_metadata_over_the_setting(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keep.metadata` of a request wins over REPOVAULT_KEEP_METADATA, either way."""
    repo = make_repo("chosen")
    repo.commit({"README.md": "hello\n"})
    repo.push()
    forge = FakeGitHub(repo.url.rsplit("/", 2)[1], "chosen")
    forge.add_issue("an issue")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    try:
        monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "auto")  # no token: off by default
        kept, _ = run_job(instance, repo, keep={"metadata": True})
        assert kept.success and kept.asset_materializations_for_node("repo_metadata")

        monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "on")
        asked = len(forge.log)
        skipped, _ = run_job(instance, repo, keep={"metadata": False})
        assert skipped.success and not skipped.asset_materializations_for_node("repo_metadata")
        assert len(forge.log) == asked
    finally:
        forge.close()


def test_a_failed_metadata_step_makes_the_request_partial_everywhere(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    private_lineage: str,
    tmp_path: Path,
) -> None:
    """The run Dagster shows failed is the request that `status`, the API, `completados` and
    `stats` show partial with `metadata_failed`: never `completed`."""
    repo = make_repo("limited")
    repo.commit({"README.md": "hello\n"})
    repo.push()
    forge = FakeGitHub(repo.url.rsplit("/", 2)[1], "limited")
    forge.add_issue("an issue")
    forge.rate_limit_after = 0
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    monkeypatch.setenv("REPOVAULT_KEEP_METADATA", "on")
    try:
        result, row = run_job(instance, repo)
    finally:
        forge.close()
    assert not result.success
    assert row.status == "partial" and list(row.reasons) == ["metadata_failed"]
    assert row.snapshot_id and "metadata_failed: " in row.error

    ended = [
        e
        for e in read_json(os.environ["REPOVAULT_TOPIC_COMPLETED"])
        if e["request_id"] == row.request_id
    ]
    assert [e["status"] for e in ended] == ["completed", "partial"]  # the last is the truth
    assert list(ended[-1]["reasons"]) == ["metadata_failed"]

    with serving(serve_command, tmp_path / "api.log") as port, session(make_token("read")) as http:
        api = f"http://127.0.0.1:{port}"
        got = http.get(f"{api}/api/requests/{row.request_id}", timeout=30).json()
        stats = http.get(f"{api}/api/stats", timeout=30).json()
        metrics = http.get(f"{api}/metrics", timeout=30).text
    assert got["status"] == "partial" and list(got["reasons"]) == ["metadata_failed"]
    assert stats["figures"]["requests_partial"] == 1 and stats["figures"]["requests_completed"] == 0
    assert stats["figures"]["failures_24h"] == 1  # as Dagster shows one failed run
    assert stats["figures"]["partial_metadata_failed_24h"] == 1
    assert stats["failures_24h"] == {"partial: metadata_failed": 1}
    assert 'repovault_requests{status="partial"} 1.0' in metrics

    shown = subprocess.run(
        [str(Path(sys.executable).with_name("repovault")), "status", row.request_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line[:1].strip())
    assert fields["status"] == "partial" and "metadata_failed" in shown.stdout, shown.stdout
