"""A broker that restarts with an empty log (issue 10 item 1), through the daemon's own sensor
loop: the injector's cursor points far past the new log's end, a request is submitted to the new
log, and the next tick must find it, warn in the tick's log and on `rechazados`."""

from __future__ import annotations

import json
import os

import pytest
from dagster import DagsterRunStatus, instance_for_test

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.lineage.requests import open_lineage
from tests.support.daemon import (
    QUEUED,
    daemon_workspace,
    last_tick_log,
    sensor_cursor,
    sensor_tick,
)
from tests.support.kafka import OwnBroker, produce, read_json

SENSOR = "kafka_injector_sensor"
SENSOR_INTERVAL_S = 10  # kafka_injector_sensor's minimum interval


def test_after_a_broker_restart_the_next_request_is_read_and_the_reset_announced(
    vault_env: dict[str, str], own_broker: OwnBroker, capsys: pytest.CaptureFixture
) -> None:
    pending = vault_env["REPOVAULT_TOPIC_PENDING"]
    assert cli(["init"]) == 0
    # Advance the injector to offsets 10 / 2 / 32 (bad messages: rejected, no runs to launch).
    for partition, count in ((0, 10), (1, 2), (2, 32)):
        produce(pending, [b"not a url"] * count, partition=partition)

    with instance_for_test(overrides=QUEUED) as instance, daemon_workspace(instance) as daemon:
        sensor_tick(daemon, SENSOR)
        before = json.loads(sensor_cursor(daemon, SENSOR))
        assert before["positions"] == {"0": 10, "1": 2, "2": 32}

        own_broker.restart_empty()
        capsys.readouterr()
        assert cli(["submit", "http://127.0.0.1:9/after/restart.git"]) == 0
        request_id = capsys.readouterr().out.strip()
        sensor_tick(daemon, SENSOR, after_s=SENSOR_INTERVAL_S + 1)

        [run] = instance.get_runs()
        assert run.tags["repovault/request_id"] == request_id
        assert run.tags["dagster/run_key"] == f"request:{request_id}"
        assert run.status == DagsterRunStatus.QUEUED
        warnings = [r["msg"] for r in last_tick_log(daemon, SENSOR) if r["levelname"] == "WARNING"]
        after = json.loads(sensor_cursor(daemon, SENSOR))

    assert after["topic_id"] != before["topic_id"]
    for partition, offset in (("0", 10), ("1", 2), ("2", 32)):
        assert any(
            f"{pending}[{partition}]: sensor cursor position {offset} " in w
            and "reading resumed at 0" in w
            for w in warnings
        ), warnings
    events = [
        e for e in read_json(vault_env["REPOVAULT_TOPIC_REJECTED"]) if e["kind"] != "dead_letter"
    ]
    assert sorted((e["kind"], e["partition"], e["offset"], e["resumed_at"]) for e in events) == [
        ("position_reset", 0, 10, 0),
        ("position_reset", 1, 2, 0),
        ("position_reset", 2, 32, 0),
    ]
    assert all(e["topic"] == pending and any(e["reason"] in w for w in warnings) for e in events)
    row = open_lineage(os.environ["REPOVAULT_DB_URL"]).get(request_id)
    assert row.status == "pending" and row.inyector_timestamp is not None
