"""Being told about the fleet, as the daemon does it: a tracked source whose listing failed
(`source_error`, once until it lists again), repositories past the refresh interval (`stale`,
once per episode), the daily summary at 07:00 UTC. Testing the sensor or the schedule in the
UI sends nothing."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from dagster import instance_for_test

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.forges.listing import parse_source
from tests.notify.test_archive_notifications import notify_runs_done
from tests.support.daemon import LAUNCH_AT_ONCE, daemon_workspace, schedule_ticks, sensor_tick
from tests.support.ui import dry_run_schedule, dry_run_sensor
from tests.support.webhook import Webhook

FLEET = "notify_fleet_sensor"
INTERVAL_S = 301  # past its minimum interval


def wait_for(webhook: Webhook, count: int, instance) -> None:
    """The notify runs requested have ended; `count` messages arrived."""
    notify_runs_done(instance)
    assert len(webhook.received) == count, webhook.titles()


def test_a_failing_source_and_a_stale_repository_are_told_once_per_episode(
    webhook: Webhook, private_lineage: str
) -> None:
    settings = Settings.from_env()
    fleet = FleetStore(open_lineage(os.environ["REPOVAULT_DB_URL"]).engine)
    source = parse_source("github:org/acme", settings)
    fleet.add_source(source, now())
    # What a sources_sensor tick records of a listing the forge answered 500 to.
    failing = "page 2 of github:org/acme failed: HTTP 500 from https://api.github.com/orgs/acme"
    fleet.record_listing(source.source_id, now(), complete=False, error=failing)
    old = now() - timedelta(hours=settings.refresh_interval_h + 2)
    fleet.record_snapshot("github.com/acme/old", "https://github.com/acme/old.git", "d1", "s1", old)
    fleet.record_snapshot(
        "github.com/acme/fresh", "https://github.com/acme/fresh.git", "d2", "s2", now()
    )

    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance, daemon_workspace(instance) as ws:
        shown = dry_run_sensor(ws, FLEET, None)  # "Test sensor": what it would send, nothing sent
        assert sorted(r["runKey"].split(":")[0] for r in shown["runRequests"]) == [
            "source_error",
            "stale",
        ]
        time.sleep(1)
        assert webhook.received == [] and instance.get_runs() == []

        sensor_tick(ws, FLEET)
        wait_for(webhook, 2, instance)
        sensor_tick(ws, FLEET, after_s=INTERVAL_S)  # still failing, still stale: nothing new
        wait_for(webhook, 2, instance)
        # The source lists again, then fails again: a new episode, told again.
        fleet.record_listing(source.source_id, now(), complete=True, error=None)
        sensor_tick(ws, FLEET, after_s=2 * INTERVAL_S)
        fleet.record_listing(source.source_id, now(), complete=False, error=failing)
        sensor_tick(ws, FLEET, after_s=3 * INTERVAL_S)
        wait_for(webhook, 3, instance)

    titles = webhook.titles()
    source_title = "RepoVault: tracked source github:org/acme cannot be listed"
    assert sorted(titles[:2]) == sorted([source_title, "RepoVault: github.com/acme/old is stale"])
    assert titles[2] == source_title  # the second episode
    by_title = {m.title: m.message for m in webhook.received}
    error = by_title["RepoVault: tracked source github:org/acme cannot be listed"]
    assert "HTTP 500" in error and "source: github:org/acme (github.com)" in error
    stale = by_title["RepoVault: github.com/acme/old is stale"]
    assert f"refresh interval: {settings.refresh_interval_h} h" in stale
    assert "latest snapshot: s1" in stale


def test_the_daily_summary_counts_the_last_day_and_a_test_of_it_sends_nothing(
    webhook: Webhook, private_lineage: str
) -> None:
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    for status, count in (("completed", 2), ("partial", 1), ("failed", 1)):
        for n in range(count):
            request_id = lineage.record_pending(
                f"https://github.com/acme/{status}{n}.git", f"github.com/acme/{status}{n}", "cli"
            )
            lineage.record_finished(
                request_id,
                status,
                error="boom" if status == "failed" else None,
                reasons={"lfs_missing": "1 LFS objects missing"} if status == "partial" else None,
            )
    # The schedule's next 07:00 UTC, whose last 24 h hold the rows above whatever the hour now.
    tick = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0)
    if tick <= datetime.now(UTC):
        tick += timedelta(days=1)
    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance, daemon_workspace(instance) as ws:
        tested = dry_run_schedule(ws, "notify_daily_schedule", tick.timestamp())
        [request] = tested["runRequests"]
        assert request["runKey"] == f"daily:{tick:%Y-%m-%d}"
        time.sleep(1)
        assert webhook.received == [] and instance.get_runs() == []

        schedule_ticks(
            ws,
            "notify_daily_schedule",
            [tick - timedelta(minutes=1), tick + timedelta(seconds=30)],
        )
        wait_for(webhook, 1, instance)

    [summary] = webhook.received
    assert summary.title == f"RepoVault daily summary {tick:%Y-%m-%d}: needs a look"
    assert "last 24 h: 2 completed, 0 unchanged, 1 partial, 1 failed, 0 rejected" in (
        summary.message
    )
    assert "stale repositories: 0" in summary.message
