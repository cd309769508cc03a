""" "Test sensor" in the Dagster UI (its GraphQL `sensorDryRun`) shows what a tick would do and
changes nothing: no row, no dead letter, no committed offset, no republished request, no
cursor; the daemon's next tick then does it all."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from dagster import instance_for_test
from kafka import KafkaConsumer, TopicPartition

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import INJECTOR_GROUP, KafkaGateway
from repovault_pipeline.core.intake.messages import request_message
from repovault_pipeline.core.lineage.requests import now, open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.daemon import QUEUED, daemon_workspace, sensor_cursor, sensor_tick
from tests.support.kafka import bootstrap, dead_letters, produce, read_all
from tests.support.ui import dry_run_sensor

INJECTOR = "kafka_injector_sensor"
INJECTOR_INTERVAL_S = 10  # its minimum interval
RECONCILE = "reconcile_sensor"


def group_offsets(topic: str) -> dict[int, int | None]:
    """The offsets the consumer group repovault-injector committed on `topic`, as lag tools
    read them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(), group_id=INJECTOR_GROUP)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def test_testing_a_sensor_in_the_ui_changes_nothing_and_the_next_tick_does_it(
    vault_env: dict[str, str], private_lineage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injector and the reconciler, with one code server (starting one costs seconds)."""
    monkeypatch.setenv("REPOVAULT_REPUBLISH_AFTER_S", "60")
    pending, rejected = vault_env["REPOVAULT_TOPIC_PENDING"], vault_env["REPOVAULT_TOPIC_REJECTED"]
    KafkaGateway(Settings.from_env()).ensure_topics()
    lineage = open_lineage(private_lineage)
    url, repo_id = "http://127.0.0.1/dry-run/tested.git", "127.0.0.1/dry-run/tested"
    stale = lineage.record_pending(url, repo_id, "cli", created_at=now() - timedelta(hours=1))
    orphan = lineage.record_pending(url, repo_id, "cli")
    lineage.record_started(orphan, url, repo_id, "cli", run_id="a-run-that-no-longer-exists")
    produce(pending, [request_message("dry-first", url, "crm", now())], key=b"k")
    with (
        instance_for_test(overrides=QUEUED) as instance,
        daemon_workspace(instance) as workspace,
    ):
        sensor_tick(workspace, INJECTOR)  # the first message: the cursor now has a position
        [first] = instance.get_runs()
        cursor = sensor_cursor(workspace, INJECTOR)
        offsets = group_offsets(pending)
        produce(pending, [request_message("dry-second", url, "crm", now()), b"{not json"], key=b"k")

        injector = dry_run_sensor(workspace, INJECTOR, cursor)
        reconciler = dry_run_sensor(workspace, RECONCILE, None)

        assert injector["skipReason"].startswith(
            "dry run, nothing written: read 2 messages; would record 1 pending and 1 rejected "
            f"rows, request 1 runs ({repo_id}), dead-letter 1 messages"
        ), injector["skipReason"]
        assert reconciler["skipReason"] == (
            f"dry run, nothing written: would close 1 requests ({orphan} failed), republish 1 "
            f"({stale}) and fail 0 that never became a run; 0 could not be checked"
        )
        assert injector["runRequests"] == []
        assert injector["dynamicPartitionsRequests"] == []
        assert (injector["cursor"], reconciler["cursor"]) == (cursor, None)  # as they were
        assert [r.run_id for r in instance.get_runs()] == [first.run_id]
        assert lineage.get("dry-second") is None
        assert (lineage.get(stale).status, lineage.get(orphan).status) == ("pending", "in_progress")
        assert dead_letters(rejected) == []
        assert len(read_all(pending)) == 3  # the three produced: nothing republished
        assert group_offsets(pending) == offsets
        assert sensor_cursor(workspace, INJECTOR) == cursor

        sensor_tick(workspace, INJECTOR, after_s=INJECTOR_INTERVAL_S + 1)
        sensor_tick(workspace, RECONCILE, after_s=INJECTOR_INTERVAL_S + 1)
        second = next(r for r in instance.get_runs() if r.run_id != first.run_id)
        assert second.tags["dagster/run_key"] == "request:dry-second"
        assert instance.get_dynamic_partitions(REPOSITORIES) == [repo_id]
        assert group_offsets(pending) != offsets  # the first tick's positions, acknowledged
    assert lineage.get("dry-second").status == "pending"
    [letter] = dead_letters(rejected)
    assert letter["original"] == "{not json"
    republished = [r for r in read_all(pending) if r.key != b"k"]  # keyed by repo_id
    assert [json.loads(r.value)["request_id"] for r in republished] == [stale]
    closed = lineage.get(orphan)
    assert (closed.status, closed.error) == (
        "failed",
        "run a-run-that-no-longer-exists no longer exists and recorded no outcome",
    )
