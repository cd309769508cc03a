"""`trending_top10_schedule` against the GitHub stand-in: "Test schedule" in the UI (its GraphQL
mutation) shows the plan and changes nothing; the scheduler daemon's own tick at the cron time
starts one `trending_intake_job` run, which the run queue launches through the code server; it
records the requests and publishes them to `pendientes`, and the injector's tick turns them
into archive runs that wait in the queue (nothing dequeues them again, so nothing clones
github.com)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import yaml
from dagster import DagsterRunStatus, instance_for_test
from dagster._core.scheduler.instigation import TickStatus

from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.fixtures.trending.server import FakeGitHub, fake_github
from tests.schedules.test_trending_schedule import TICK, TOP_TEN
from tests.support.daemon import (
    daemon_workspace,
    dequeue,
    dev_instance_config,
    schedule_ticks,
    schedule_ticks_of,
    sensor_tick,
    wait_for_runs,
)
from tests.support.ui import dry_run_schedule

SCHEDULE = "trending_top10_schedule"


@pytest.fixture
def github(
    vault_env: dict[str, str], private_lineage: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGitHub]:
    """The stand-in for github.com/trending and its API, in the environment the code server
    starts with; lineage of the test's own (rows keyed by the tick's date)."""
    with fake_github() as fake:
        for key in ("REPOVAULT_TRENDING_LANGUAGE", "REPOVAULT_TRENDING_SINCE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("REPOVAULT_ALLOWED_HOSTS", "github.com,127.0.0.1")
        monkeypatch.setenv("REPOVAULT_TRENDING_URL", f"{fake.url}/trending")
        monkeypatch.setenv("REPOVAULT_GITHUB_API", f"{fake.url}/api")
        fake.page()
        yield fake


def test_testing_the_schedule_in_the_ui_changes_nothing(
    github: FakeGitHub, private_lineage: str
) -> None:
    with instance_for_test(overrides=dev_instance_config()) as instance:
        with daemon_workspace(instance) as workspace:
            evaluation = dry_run_schedule(workspace, SCHEDULE, TICK.timestamp())
        [request] = evaluation["runRequests"]
        assert (request["runKey"], request["jobName"]) == ("trending:2025-01-15", None)
        config = yaml.safe_load(request["runConfigYaml"])
        entries = config["ops"]["request_trending"]["config"]["entries"]
        assert [e["repo_url"].removeprefix("https://").lower() for e in entries] == TOP_TEN

        assert instance.get_runs() == []
        assert instance.get_dynamic_partitions(REPOSITORIES) == []
    assert open_lineage(private_lineage).find() == []
    assert len(github.hits_on("/trending")) == 1


def test_the_daily_tick_requests_the_trending_top_ten(
    github: FakeGitHub, private_lineage: str
) -> None:
    with (
        instance_for_test(overrides=dev_instance_config()) as instance,
        daemon_workspace(instance) as workspace,
    ):
        # The daemon first sees the schedule a minute before 06:00, then once 06:00 has passed.
        schedule_ticks(
            workspace, SCHEDULE, [TICK - timedelta(minutes=1), TICK + timedelta(seconds=5)]
        )
        [tick] = schedule_ticks_of(workspace, SCHEDULE)
        assert tick.status == TickStatus.SUCCESS, tick.error
        assert tick.timestamp == TICK.timestamp()
        [intake] = instance.get_runs()
        assert tick.run_ids == [intake.run_id]
        assert intake.job_name == "trending_intake_job"
        assert intake.tags["dagster/run_key"] == "trending:2025-01-15"
        assert intake.tags["repovault/trending_date"] == "2025-01-15"

        dequeue(workspace)
        [intake] = wait_for_runs(instance, 1)
        assert intake.status == DagsterRunStatus.SUCCESS
        sensor_tick(workspace, "kafka_injector_sensor")
        runs = [run for run in instance.get_runs() if run.job_name == "archive_repo_job"]
        partitions = instance.get_dynamic_partitions(REPOSITORIES)

    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(TOP_TEN)
    assert sorted(partitions) == sorted(TOP_TEN)
    rows = {row.request_id: row for row in open_lineage(private_lineage).find()}
    for run in runs:
        assert run.status == DagsterRunStatus.QUEUED
        request_id = run.tags["repovault/request_id"]
        assert run.tags["dagster/run_key"] == f"request:{request_id}"
        assert run.tags["repovault/source"] == "trending"
        assert run.tags["repovault/host"] == "github.com"
        assert (rows[request_id].source, rows[request_id].status) == ("trending", "pending")
    assert len(github.hits_on("/trending")) == 1
