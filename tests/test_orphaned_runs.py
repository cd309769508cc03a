"""An orphaned run must not block its repository (issue 10 item 3, issue 20 item 7), and its
request must end. With `make run`'s instance (deploy/dagster-dev.yaml: queued runs, one per
repository, run monitoring on): the code server and the workers of two runs are SIGKILLed, one
run mid-clone (it holds no lease), the other mid-upload (it holds its bucket's lease); "dagster
dev" comes back, both runs are STARTED for ever and the next run of each repository QUEUED
behind. A reconcile tick fails the one whose lease went unrenewed (REPOVAULT_ORPHAN_AFTER_TTLS
TTLs), saying when its worker stopped, and its repository's next run starts and completes; the
other is failed by the monitoring daemon past its `dagster/max_runtime`
(REPOVAULT_RUN_TIMEOUT_S), its repository's next run completes, and a reconcile tick closes its
request."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus, instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.vault.lease import inspect
from repovault_pipeline.core.vault.store import open_store
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
from tests.support.repos import ServedRepo, git
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import assert_tree_is_head

RUN_TIMEOUT_S = 4
LEASE_TTL_S = 2


def test_an_orphaned_run_is_failed_and_the_next_run_of_its_repository_starts(
    vault_env: dict[str, str],
    private_lineage: str,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
) -> None:
    repo = make_repo("orphan")
    repo.commit({"README.md": "archived after an orphan\n"})
    repo.push()
    uploading = make_repo("orphan-upload")
    uploading.commit({f"files/{i}.txt": f"file {i}\n" for i in range(20)})
    uploading.push()
    ybucket = bucket_name(uploading.repo_id, vault_env["REPOVAULT_BUCKET_PREFIX"])
    git_link = BreakableProxy(int(repo.url.split(":")[2].split("/")[0]))
    git_link.hold = True  # the git server hangs: the first run of `repo` sits in clone_repo
    url = repo.url.replace(repo.url.split("/")[2], f"127.0.0.1:{git_link.port}")
    s3_link = BreakableProxy(int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1]))
    # The first run of `uploading` freezes at its first tree/ upload: it holds its lease.
    s3_link.pause_on = f"PUT /{ybucket}/tree/".encode()
    for name, value in {  # read by the code server, and by reconcile in this process
        "REPOVAULT_RUN_TIMEOUT_S": RUN_TIMEOUT_S,
        "REPOVAULT_LEASE_TTL_S": LEASE_TTL_S,
        "REPOVAULT_ORPHAN_AFTER_TTLS": 1,
        "REPOVAULT_S3_ENDPOINT": s3_link.endpoint,
    }.items():
        monkeypatch.setenv(name, str(value))
    assert cli(["init"]) == 0
    assert cli(["submit", url, url, uploading.url, uploading.url]) == 0
    requests = capsys.readouterr().out.split()[-4:]
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    store = open_store(Settings.from_env())

    try:
        with instance_for_test(overrides=dev_instance_config()) as instance:
            assert instance.run_monitoring_enabled
            with daemon_workspace(instance) as daemon:
                sensor_tick(daemon, "kafka_injector_sensor")
                dequeue(daemon)
                orphan, held = wait_until(
                    lambda: _started(instance, url.removeprefix("http://")[:-4], uploading.repo_id),
                    30,
                    lambda: f"runs not started: {[r.status for r in instance.get_runs()]}",
                )
                assert orphan.tags["dagster/max_runtime"] == str(RUN_TIMEOUT_S)
                orphan_request = orphan.tags["repovault/request_id"]
                held_request = held.tags["repovault/request_id"]
                wait_until(lambda: lineage.get(orphan_request).status == "in_progress")
                wait_until(lambda: s3_link.paused, describe=lambda: "no tree/ upload")
                worker, writer = (run_worker_pid(instance, r.run_id) for r in (orphan, held))
                assert parent_pid(writer) == parent_pid(worker)
                sigkill(parent_pid(worker))  # the code server: nobody is left to see them die
                sigkill(worker)
                sigkill(writer)
                s3_link.resume()
            lease = inspect(store, ybucket)
            assert (lease.state, lease.run_id) == ("held", held.run_id)

            with daemon_workspace(instance) as daemon:  # `dagster dev` starts again
                dequeue(daemon)
                statuses = {r.run_id: r.status for r in instance.get_runs()}
                queued = {r for r in statuses if r not in (orphan.run_id, held.run_id)}
                assert statuses == {
                    orphan.run_id: DagsterRunStatus.STARTED,
                    held.run_id: DagsterRunStatus.STARTED,
                    **dict.fromkeys(queued, DagsterRunStatus.QUEUED),
                }
                wait_until(lambda: inspect(store, ybucket).age_s > LEASE_TTL_S, 30)
                with daemon_tick_context(
                    instance, "reconcile_sensor", resources=repovault_resources()
                ) as context:
                    result = reconcile_sensor(context)
                assert "closed 1 requests (1 failed)" in result.skip_reason.skip_message
                failed = instance.get_run_by_id(held.run_id)
                assert failed.status == DagsterRunStatus.FAILURE
                [event] = instance.all_logs(held.run_id, of_type=DagsterEventType.RUN_FAILURE)
                assert f"stopped renewing the lease of {ybucket} at " in event.message
                row = lineage.get(held_request)
                assert (row.status, row.run_id) == ("failed", held.run_id)
                assert row.error == event.message and "its process is gone" in row.error
                assert inspect(store, ybucket).state == "interrupted"
                # the other orphan holds no lease: left to run monitoring
                assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.STARTED

                started_at = instance.get_run_record_by_id(orphan.run_id).start_time
                monitor_runs(daemon, after_s=max(0.0, started_at + RUN_TIMEOUT_S + 1 - time.time()))
                assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.FAILURE
                git_link.hold = False
                # The next run of each repository starts at once, side by side, and completes.
                dequeue(daemon)
                assert not [r for r in instance.get_runs() if r.status == DagsterRunStatus.QUEUED]
                runs = wait_for_runs(instance, 4)

            statuses = {r.run_id: r.status for r in runs}
            assert statuses == {
                orphan.run_id: DagsterRunStatus.FAILURE,
                held.run_id: DagsterRunStatus.FAILURE,
                **dict.fromkeys(queued, DagsterRunStatus.SUCCESS),
            }
            assert lineage.get(orphan_request).status == "in_progress"  # nobody closed it

            with daemon_tick_context(
                instance, "reconcile_sensor", resources=repovault_resources()
            ) as context:
                result = reconcile_sensor(context)
    finally:
        git_link.close()
        s3_link.close()
        monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", vault_env["REPOVAULT_S3_ENDPOINT"])

    assert "closed 1 requests (1 failed)" in result.skip_reason.skip_message
    closed = lineage.get(orphan_request)
    assert (closed.status, closed.run_id) == ("failed", orphan.run_id)
    assert f"maximum runtime of {RUN_TIMEOUT_S} seconds" in closed.error
    assert closed.worker_finishing_timestamp >= closed.worker_start_timestamp
    others = [lineage.get(r) for r in requests if r not in (orphan_request, held_request)]
    assert sorted((o.status, o.run_id in queued) for o in others) == [("completed", True)] * 2
    events = read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])
    assert sorted((e["request_id"], e["status"], e["run_id"]) for e in events) == sorted(
        [(orphan_request, "failed", orphan.run_id), (held_request, "failed", held.run_id)]
        + [(o.request_id, "completed", o.run_id) for o in others]
    )
    # What the killed writer left in its bucket was repaired by the next run.
    assert_tree_is_head(ybucket, uploading.bare)
    assert cli(["restore", uploading.url, str(tmp_path / "restored")]) == 0
    assert git(tmp_path / "restored", "rev-parse", "HEAD") == uploading.refs()["refs/heads/main"]


def _started(instance, *partitions: str):
    """The STARTED runs of `partitions`, in that order, once each has one."""
    runs = {
        r.tags.get("dagster/partition"): r
        for r in instance.get_runs()
        if r.status == DagsterRunStatus.STARTED
    }
    return [runs[p] for p in partitions] if all(p in runs for p in partitions) else None
