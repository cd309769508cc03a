"""The injector as the Dagster daemon runs it: `repovault submit` -> sensor tick (the daemon's own
code) -> run launched through the code server -> archive -> lineage and status events."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from dagster import DagsterInstance, DagsterRunStatus, instance_for_test
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration

from repovault_pipeline.cli import main as cli
from repovault_pipeline.resources import lineage_store
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.servers import REPO_ROOT

SENSOR = "kafka_injector_sensor"
# Runs go straight to the default launcher (a run worker process through the code server);
# the queue's own daemon is not part of what these tests exercise.
LAUNCH_AT_ONCE = {
    "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
}


@contextmanager
def daemon_workspace(instance: DagsterInstance) -> Iterator[object]:
    target = ModuleTarget(
        module_name="repovault_pipeline.definitions",
        attribute=None,
        working_directory=str(REPO_ROOT),
        location_name="repovault",
    )
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def tick(context: object, crash_after: str | None = None) -> None:
    flags = {SENSOR: {crash_after: Exception("simulated daemon crash")}} if crash_after else None
    list(
        execute_sensor_iteration(
            context, logging.getLogger("test-daemon"), None, None, debug_crash_flags=flags
        )
    )


def wait_for_runs(instance: DagsterInstance, count: int, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if len(runs) >= count and all(r.is_finished for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(
        f"runs did not finish: {[(r.run_id, r.status) for r in instance.get_runs()]}"
    )


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
    assert run.tags["dagster/run_key"].startswith(vault_env["REPOVAULT_TOPIC_PENDING"] + ":")
    assert run.tags["repovault/request_id"] == request_id

    row = lineage_store(os.environ["REPOVAULT_DB_URL"]).get(request_id)
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
        for _ in range(2):  # the daemon comes back (the first tick resumes the crashed one)
            time.sleep(11)  # the sensor's minimum interval
            tick(workspace)
        runs = wait_for_runs(instance, 2)

    keys = [r.tags["dagster/run_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 2
    assert {r.tags["dagster/partition"] for r in runs} == {
        r.url.removeprefix("http://").removesuffix(".git") for r in repos
    }
