"""`trending_top10_schedule` ticked by the scheduler daemon's own code at its cron time, the
schedule evaluated in the code server against the GitHub stand-in; its runs wait in the queue
(nothing dequeues them, so nothing clones github.com)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from dagster import DagsterRunStatus, instance_for_test
from dagster._core.scheduler.instigation import TickStatus

from repovault_pipeline.partitions import REPOSITORIES
from tests.fixtures.trending.server import FakeGitHub, fake_github
from tests.schedules.test_trending_schedule import TICK, TOP_TEN
from tests.support.daemon import QUEUED, daemon_workspace, schedule_ticks, schedule_ticks_of

SCHEDULE = "trending_top10_schedule"


@pytest.fixture
def github(
    vault_env: dict[str, str], private_lineage: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGitHub]:
    """The stand-in for github.com/trending and its API, in the environment the code server
    starts with; lineage of the test's own (the schedule writes rows keyed by the tick's date)."""
    with fake_github() as fake:
        for key in ("REPOVAULT_TRENDING_LANGUAGE", "REPOVAULT_TRENDING_SINCE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com,127.0.0.1")
        monkeypatch.setenv("REPOVAULT_TRENDING_URL", f"{fake.url}/trending")
        monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{fake.url}/api")
        yield fake


def test_the_daily_tick_requests_the_trending_top_ten(github: FakeGitHub) -> None:
    github.page()
    with (
        instance_for_test(overrides=QUEUED) as instance,
        daemon_workspace(instance) as workspace,
    ):
        # The daemon first sees the schedule a minute before 06:00, then once 06:00 has passed.
        schedule_ticks(
            workspace, SCHEDULE, [TICK - timedelta(minutes=1), TICK + timedelta(seconds=5)]
        )
        ticks = schedule_ticks_of(workspace, SCHEDULE)
        runs = instance.get_runs()
        partitions = instance.get_dynamic_partitions(REPOSITORIES)

    [tick] = ticks
    assert tick.status == TickStatus.SUCCESS, tick.error
    assert tick.timestamp == TICK.timestamp()
    assert sorted(tick.run_ids) == sorted(run.run_id for run in runs)
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(TOP_TEN)
    assert sorted(partitions) == sorted(TOP_TEN)
    for run in runs:
        assert run.status == DagsterRunStatus.QUEUED
        assert run.job_name == "archive_repo_job"
        assert run.tags["dagster/schedule_name"] == SCHEDULE
        assert run.tags["dagster/run_key"] == f"trending:2025-01-15:{run.tags['dagster/partition']}"
        assert run.tags["repovault/trending_date"] == "2025-01-15"
    assert len(github.hits_on("/trending")) == 1
