"""The injector as the Dagster daemon runs it: `repovault submit` -> sensor tick (the daemon's own
code) -> run launched through the code server -> archive -> lineage and status events."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from dagster import DagsterRunStatus, instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.lineage.requests import open_lineage
from tests.support.daemon import LAUNCH_AT_ONCE, daemon_workspace, sensor_tick, wait_for_runs
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo

SENSOR = "kafka_injector_sensor"


INTERVAL_S = 10  # the sensor's minimum interval


def tick(context: object, crash_after: str | None = None, after_s: float = 0) -> None:
    sensor_tick(context, SENSOR, crash_after, after_s)


def test_submit_tick_run_lineage_and_events(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], capsys: pytest.CaptureFixture
) -> None:
    repo = make_repo("daemon-e2e")
    repo.commit({"README.md": "through the daemon\n"})
    repo.push()
    assert cli(["init"]) == 0
    assert cli(["submit", repo.url]) == 0
    request_id = capsys.readouterr().out.strip().splitlines()[-1]
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")

    with (
        instance_for_test(overrides=LAUNCH_AT_ONCE) as instance,
        daemon_workspace(instance) as workspace,
    ):
        tick(workspace)
        [run] = wait_for_runs(instance, 1)

    assert run.status == DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == repo_id
    assert run.tags["dagster/run_key"] == f"request:{request_id}"
    assert run.tags["repovault/request_id"] == request_id

    row = open_lineage(os.environ["REPOVAULT_DB_URL"]).get(request_id)
    assert (row.status, row.source, row.run_id) == ("completed", "cli", run.run_id)
    assert row.creation_timestamp <= row.inyector_timestamp <= row.worker_start_timestamp
    assert row.worker_start_timestamp <= row.worker_finishing_timestamp

    started = read_json(vault_env["REPOVAULT_TOPIC_IN_PROGRESS"])
    finished = read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])
    assert [(e["request_id"], e["status"], e["run_id"]) for e in started] == [
        (request_id, "in_progress", run.run_id)
    ]
    assert [(e["request_id"], e["status"], e["head_commit"]) for e in finished] == [
        (request_id, "completed", repo.refs()["refs/heads/main"])
    ]


def test_a_daemon_crash_between_launch_and_cursor_starts_no_duplicate(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], capsys: pytest.CaptureFixture
) -> None:
    repos = []
    for name in ("crash-a", "crash-b"):
        repo = make_repo(name)
        repo.commit({"f.txt": name})
        repo.push()
        repos.append(repo)
    assert cli(["submit", *(r.url for r in repos)]) == 0

    with (
        instance_for_test(overrides=LAUNCH_AT_ONCE) as instance,
        daemon_workspace(instance) as workspace,
    ):
        # The daemon dies right after launching the first run: its cursor is not stored yet.
        tick(workspace, crash_after="RUN_LAUNCHED")
        assert len(instance.get_runs()) == 1
        wait_for_runs(instance, 1)
        for later in (1, 2):  # the daemon comes back (the first tick resumes the crashed one)
            tick(workspace, after_s=later * (INTERVAL_S + 1))
        runs = wait_for_runs(instance, 2)

    keys = [r.tags["dagster/run_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 2
    assert {r.tags["dagster/partition"] for r in runs} == {
        r.url.removeprefix("http://").removesuffix(".git") for r in repos
    }
