"""`reconcile_sensor` against real faults (issue 10 item 2): PostgreSQL cut while
`record_lineage` runs, and a request whose message died with the broker."""

from __future__ import annotations

import json
from collections.abc import Callable

import boto3
import pytest
from dagster import DagsterInstance, SensorResult, instance_for_test
from sqlalchemy.engine import make_url

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.definitions import defs, repovault_resources
from repovault_pipeline.partitions import repositories
from repovault_pipeline.sensors import reconcile_sensor
from tests.support.daemon import (
    LAUNCH_AT_ONCE,
    daemon_tick_context,
    daemon_workspace,
    sensor_tick,
    wait_for_runs,
)
from tests.support.kafka import OwnBroker, produce, read_all, read_json
from tests.support.repos import ServedRepo
from tests.support.tcp_proxy import BreakableProxy

INJECTOR_INTERVAL_S = 10  # kafka_injector_sensor's minimum interval


def reconcile_tick(instance: DagsterInstance, cursor: str | None = None) -> SensorResult:
    with daemon_tick_context(
        instance, "reconcile_sensor", cursor, repovault_resources()
    ) as context:
        result = reconcile_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_a_snapshot_committed_while_lineage_was_down_is_recorded_completed(
    vault_env: dict[str, str],
    private_lineage: str,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("pg-cut")
    repo.commit({"README.md": "stored while PostgreSQL was away\n"})
    repo.push()
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    request_id = lineage.record_pending(repo.url, repo_id, "cli")
    # The run reaches PostgreSQL through a proxy that dies when record_lineage closes the row.
    direct = make_url(vault_env["REPOVAULT_DB_URL"])
    cut = BreakableProxy(direct.port or 5432, break_on=b"UPDATE repo_requests SET status=")
    proxied = direct.set(host="127.0.0.1", port=cut.port, query={"sslmode": "disable"})
    monkeypatch.setenv("REPOVAULT_DB_URL", proxied.render_as_string(hide_password=False))

    with instance_for_test() as instance:
        instance.add_dynamic_partitions(repositories.name, [repo_id])
        result = defs.resolve_job_def("archive_repo_job").execute_in_process(
            partition_key=repo_id,
            instance=instance,
            tags=request_tags(request_id, repo.url, "cli", now()),
            raise_on_error=False,
        )
        assert not result.success and cut.broken
        assert lineage.get(request_id).status == "in_progress"  # nobody could close it
        s3 = boto3.client("s3", endpoint_url=vault_env["REPOVAULT_S3_ENDPOINT"])
        bucket = bucket_name(repo_id, vault_env["REPOVAULT_BUCKET_PREFIX"])
        latest = json.loads(s3.get_object(Bucket=bucket, Key="latest.json")["Body"].read())

        cut.close()
        monkeypatch.setenv("REPOVAULT_DB_URL", vault_env["REPOVAULT_DB_URL"])  # healed
        tick = reconcile_tick(instance)

    assert "closed 1 requests (1 completed)" in tick.skip_reason.skip_message
    row = lineage.get(request_id)
    assert (row.status, row.run_id, row.error) == ("completed", result.run_id, None)
    assert (row.snapshot_id, row.head_commit) == (
        latest["snapshot_id"],
        repo.refs()["refs/heads/main"],
    )
    assert row.bytes_uploaded and row.bytes_uploaded > 0  # from upload_snapshot's metadata
    events = read_json(vault_env["REPOVAULT_TOPIC_COMPLETED"])
    assert [(e["request_id"], e["status"], e["snapshot_id"]) for e in events] == [
        (request_id, "completed", latest["snapshot_id"])
    ]


def test_a_request_lost_with_the_broker_is_republished_and_runs_once(
    vault_env: dict[str, str],
    private_lineage: str,
    own_broker: OwnBroker,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("lost")
    repo.commit({"README.md": "requested just before the broker died\n"})
    repo.push()
    monkeypatch.setenv("REPOVAULT_REPUBLISH_AFTER_S", "0")
    pending = vault_env["REPOVAULT_TOPIC_PENDING"]
    assert cli(["init"]) == 0
    assert cli(["submit", repo.url]) == 0
    request_id = capsys.readouterr().out.split()[-1]
    own_broker.restart_empty()  # the message is gone with the broker's memory
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])

    with instance_for_test(overrides=LAUNCH_AT_ONCE) as instance:
        first = reconcile_tick(instance)
        second = reconcile_tick(instance, first.cursor)  # published twice: a duplicate
        copies = [r.value for r in read_all(pending)]
        assert len(copies) == 2 and {json.loads(c)["request_id"] for c in copies} == {request_id}

        with daemon_workspace(instance) as daemon:
            sensor_tick(daemon, "kafka_injector_sensor")
            wait_for_runs(instance, 1)
            produce(pending, [copies[0]])  # delivered once more, after its run
            sensor_tick(daemon, "kafka_injector_sensor", after_s=INJECTOR_INTERVAL_S + 1)
            [run] = wait_for_runs(instance, 1)
        after = reconcile_tick(instance, second.cursor)
        assert [r.run_id for r in instance.get_runs()] == [run.run_id]

    assert run.tags["repovault/request_id"] == request_id
    row = lineage.get(request_id)
    assert (row.status, row.run_id, row.source) == ("completed", run.run_id, "cli")
    assert row.inyector_timestamp <= row.worker_start_timestamp  # the first read is kept
    assert json.loads(after.cursor)["republished"] == {}
    assert len(read_all(pending)) >= 3  # delivered three times or more, ran once
