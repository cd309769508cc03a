"""Sending through Apprise and the records sent, without Dagster's daemon: the settings'
one-line refusals, a webhook that is down, what a message may never hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from repovault_pipeline.core.common.settings import ConfigError, Settings
from repovault_pipeline.core.lineage.rows import Request
from repovault_pipeline.core.notify.events import Notification, archive_notice, wanted
from repovault_pipeline.core.notify.send import send, target_name
from repovault_pipeline.jobs import NotificationConfig, notify_job
from repovault_pipeline.resources import NotifyResource
from tests.support.webhook import Webhook

NOTICE = Notification(event="failed", key="failed:r1:run1", title="t", body="b")


def test_an_unknown_event_is_one_line_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REPOVAULT_NOTIFY_EVENTS": "failed, bogus"})
    assert str(refused.value) == (
        "REPOVAULT_NOTIFY_EVENTS has 'bogus', which is not one of failed, partial, "
        "unrestorable, source_error, stale, daily; list some of those, comma-separated"
    )


def test_urls_are_cut_where_the_next_url_starts_and_events_filter() -> None:
    settings = Settings.from_env(
        {
            "REPOVAULT_NOTIFY_URLS": "mailtos://u:p@mail.example?to=a@x.org,b@x.org, ntfys://t",
            "REPOVAULT_NOTIFY_EVENTS": "Failed,daily",
        }
    )
    assert settings.notify_urls == ("mailtos://u:p@mail.example?to=a@x.org,b@x.org", "ntfys://t")
    assert wanted(settings, "failed") and wanted(settings, "daily")
    assert not wanted(settings, "stale")
    assert not wanted(Settings.from_env({}), "failed")  # no URL: nothing is sent
    assert "p@mail" not in repr(settings)


def test_a_target_is_named_by_position_and_scheme_only() -> None:
    assert target_name(1, "slack://T0KEN/B0KEN/C0KEN") == "#2 slack"


def test_a_webhook_that_is_down_is_named_without_its_secrets(closed_port: int) -> None:
    hook = Webhook()
    down = f"json://ops:{Webhook.PASSWORD}@127.0.0.1:{closed_port}/hook"
    try:
        delivery = send((down, hook.url), NOTICE)
    finally:
        hook.stop()
    assert delivery.sent == ["#2 json"]  # the one that is down keeps it from no other
    [failed] = delivery.failed
    assert failed.startswith("#1 json: ") and Webhook.PASSWORD not in failed
    assert [r.title for r in hook.received] == ["t"]


def test_a_notify_run_reaching_nobody_fails_alone_and_says_where_without_secrets(
    vault_env: dict[str, str], closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "REPOVAULT_NOTIFY_URLS", f"json://ops:{Webhook.PASSWORD}@127.0.0.1:{closed_port}/x"
    )
    result = notify_job.execute_in_process(
        run_config=NotificationConfig.of(NOTICE),
        resources={"notify": NotifyResource()},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    said = str(failure.step_failure_data.user_failure_data.description)
    assert said.startswith("notification failed:r1:run1 reached no REPOVAULT_NOTIFY_URLS entry")
    assert Webhook.PASSWORD not in said and str(closed_port) not in said.split("#1 json")[0]


def row(**fields: object) -> Request:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    base = dict(
        request_id="r1",
        repo_url="https://github.com/acme/app.git",
        repo_id="github.com/acme/app",
        source="cli",
        status="failed",
        creation_timestamp=at,
        inyector_timestamp=None,
        worker_start_timestamp=at,
        worker_finishing_timestamp=at,
        run_id="run1",
        snapshot_id=None,
        head_commit=None,
        bytes_uploaded=None,
        error="clone of https://ci:s3cret-tok@github.com/acme/app.git failed: 503",
    )
    return Request(**{**base, **fields})  # type: ignore[arg-type]


def test_an_archive_message_comes_from_its_own_final_row_with_secrets_masked() -> None:
    told = archive_notice(row(), "run1")
    assert told is not None and told.event == "failed" and told.key == "failed:r1:run1"
    assert "s3cret-tok" not in told.body and "503" in told.body
    assert archive_notice(row(run_id="run2"), "run1") is None  # re-executed: run2 tells
    assert archive_notice(row(status="completed", error=None), "run1") is None
    # A failed run whose worker died before it could close its row: the run's own reason.
    died = archive_notice(row(status="in_progress", error=None), "run1", "worker died")
    assert died is not None and "error: worker died" in died.body
