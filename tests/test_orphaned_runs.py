"""An orphaned run must not block its repository (issue 10 item 3), and its request must end
(item 2). With `make run`'s instance (deploy/dagster-dev.yaml: queued runs, one per repository,
run monitoring on): a run's worker and code server are SIGKILLed mid-clone, "dagster dev" comes
back, the run is STARTED for ever and the next run of the repository QUEUED behind it, until the
monitoring daemon fails it past its `dagster/max_runtime` (REPOVAULT_RUN_TIMEOUT_S). Then the
next run starts and completes, and one reconcile tick closes the orphan's request."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from dagster import DagsterRunStatus, instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.lineage import open_lineage
from repovault_pipeline.definitions import repovault_resources
from repovault_pipeline.sensors import reconcile_sensor
from tests.support.daemon import (
    daemon_tick_context,
    daemon_workspace,
    dequeue,
    dev_instance_config,
    monitor_runs,
    parent_pid,
    run_worker_pid,
    sensor_tick,
    sigkill,
    wait_for_runs,
    wait_until,
)
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.tcp_proxy import BreakableProxy

RUN_TIMEOUT_S = 4


def test_an_orphaned_run_is_failed_and_the_next_run_of_its_repository_starts(
    vault_env: dict[str, str],
    private_lineage: str,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("orphan")
    repo.commit({"README.md": "archived after an orphan\n"})
    repo.push()
    git = BreakableProxy(int(repo.url.split(":")[2].split("/")[0]))
    git.hold = True  # the git server hangs: the first run sits in clone_repo
    url = repo.url.replace(repo.url.split("/")[2], f"127.0.0.1:{git.port}")
    monkeypatch.setenv("REPOVAULT_RUN_TIMEOUT_S", str(RUN_TIMEOUT_S))  # read by the code server
    assert cli(["init"]) == 0
    assert cli(["submit", url, url]) == 0
    first_request, second_request = capsys.readouterr().out.split()[-2:]
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])

    try:
        with instance_for_test(overrides=dev_instance_config()) as instance:
            assert instance.run_monitoring_enabled
            with daemon_workspace(instance) as daemon:
                sensor_tick(daemon, "kafka_injector_sensor")
                dequeue(daemon)
                orphan = wait_until(lambda: _started(instance), describe=lambda: "no run started")
                assert orphan.tags["dagster/max_runtime"] == str(RUN_TIMEOUT_S)
                orphan_request = orphan.tags["repovault/request_id"]
                wait_until(lambda: lineage.get(orphan_request).status == "in_progress")
                worker = run_worker_pid(instance, orphan.run_id)
                sigkill(parent_pid(worker))  # the code server: nobody is left to see the worker die
                sigkill(worker)

            with daemon_workspace(instance) as daemon:  # `dagster dev` starts again
                dequeue(daemon)
                statuses = {r.run_id: r.status for r in instance.get_runs()}
                [queued] = [r for r in statuses if r != orphan.run_id]
                assert statuses == {
                    orphan.run_id: DagsterRunStatus.STARTED,
                    queued: DagsterRunStatus.QUEUED,
                }
                started_at = instance.get_run_record_by_id(orphan.run_id).start_time
                monitor_runs(daemon, after_s=max(0.0, started_at + RUN_TIMEOUT_S + 1 - time.time()))
                assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.FAILURE
                git.hold = False
                dequeue(daemon)
                runs = wait_for_runs(instance, 2)

            statuses = {r.run_id: r.status for r in runs}
            assert statuses == {
                orphan.run_id: DagsterRunStatus.FAILURE,
                queued: DagsterRunStatus.SUCCESS,
            }
            assert lineage.get(orphan_request).status == "in_progress"  # nobody closed it

            with daemon_tick_context(
                instance, "reconcile_sensor", resources=repovault_resources()
            ) as context:
                result = reconcile_sensor(context)
    finally:
        git.close()

    assert "closed 1 requests (1 failed)" in result.skip_reason.skip_message
    closed = lineage.get(orphan_request)
    assert (closed.status, closed.run_id) == ("failed", orphan.run_id)
    assert f"maximum runtime of {RUN_TIMEOUT_S} seconds" in closed.error
    assert closed.worker_finishing_timestamp >= closed.worker_start_timestamp
    other = lineage.get(({first_request, second_request} - {orphan_request}).pop())
    assert (other.status, other.run_id) == ("completed", queued)
    events = read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])
    assert sorted((e["request_id"], e["status"], e["run_id"]) for e in events) == sorted(
        [(orphan_request, "failed", orphan.run_id), (other.request_id, "completed", queued)]
    )


def _started(instance):
    runs = [r for r in instance.get_runs() if r.status == DagsterRunStatus.STARTED]
    return runs[0] if runs else None
