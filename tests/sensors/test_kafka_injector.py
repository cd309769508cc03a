"""`kafka_injector_sensor` tick by tick against the real broker, with PostgreSQL lineage."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from dagster import DagsterInstance
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import INJECTOR_GROUP, BrokerUnavailable, KafkaGateway
from repovault_pipeline.core.lineage.requests import open_lineage
from tests.support.injector import injector_tick as tick
from tests.support.kafka import dead_letters, produce, read_all, read_json
from tests.support.tcp_proxy import BreakableProxy

TOKEN = "ghp_" + "Z" * 36


def drain(
    instance: DagsterInstance, cursor: str | None = None, max_ticks: int = 100
) -> tuple[list, str | None, int]:
    """Tick until a tick reads nothing; returns run requests, cursor and ticks."""
    requests: list = []
    for ticks in range(1, max_ticks + 1):
        result = tick(instance, cursor)
        if result.cursor == cursor and not result.run_requests:
            return requests, cursor, ticks
        cursor = result.cursor
        requests += result.run_requests
    raise AssertionError("the backlog did not drain")


def url(name: str) -> str:
    return f"http://127.0.0.1:9/{name}/repo.git"


def test_each_kind_of_message_gets_the_right_outcome(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    spec = json.dumps(
        {
            "request_id": "req-json-1",
            "repo_url": url("json"),
            "source": "kafka",
            "requested_at": "2026-01-02T03:04:05+00:00",
        }
    ).encode()
    messages = [
        spec,
        url("bare").encode(),
        b'{"repo_url": "http://127.0.0.1:9/x/y.git",',
        b"file:///etc/passwd",
        f"https://x-access-token:{TOKEN}@127.0.0.1/a/b.git".encode(),
        b"",
        b"\xff\xfe not utf-8",
    ]
    produce(topic, messages, key=b"third-party")

    result = tick(instance, None)

    assert [r.partition_key for r in result.run_requests] == [
        "127.0.0.1:9/json/repo",
        "127.0.0.1:9/bare/repo",
    ]
    # One run per request: the run key is the request id (bare URLs get one per record).
    assert [r.run_key for r in result.run_requests] == [
        f"request:{r.tags['repovault/request_id']}" for r in result.run_requests
    ]
    assert len({r.run_key for r in result.run_requests}) == 2
    assert result.run_requests[0].tags["repovault/request_id"] == "req-json-1"
    assert result.dynamic_partitions_requests[0].partition_keys == sorted(
        ["127.0.0.1:9/json/repo", "127.0.0.1:9/bare/repo"]
    )

    dead = dead_letters(vault_env["REPOVAULT_TOPIC_REJECTED"])
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 5
    assert "malformed JSON" in reasons[0]
    assert "local paths" in reasons[1]
    assert "GITHUB_TOKEN" in reasons[2]
    assert "empty message" in reasons[3]
    assert "not UTF-8" in reasons[4]
    assert dead[3]["original"] == "" and dead[1]["original"] == "file:///etc/passwd"
    assert all(d["topic"] == topic and isinstance(d["offset"], int) for d in dead)

    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    json_row = lineage.get("req-json-1")
    assert (json_row.status, json_row.source) == ("pending", "kafka")
    assert json_row.creation_timestamp.isoformat() == "2026-01-02T03:04:05+00:00"
    assert json_row.inyector_timestamp > json_row.creation_timestamp
    rejected = [lineage.get(d["request_id"]) for d in dead]
    assert [r.status for r in rejected] == ["rejected"] * 5
    assert all(r.error and r.inyector_timestamp for r in rejected)

    everything = json.dumps(dead) + repr(rejected) + repr(result.run_requests)
    assert TOKEN not in everything


def test_cursor_carries_over_and_offsets_reach_the_consumer_group(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    produce(topic, [url(f"first{i}").encode() for i in range(3)])
    first = tick(instance, None)
    assert len(first.run_requests) == 3

    second = tick(instance, first.cursor)  # nothing new: same cursor, no request
    assert second.run_requests == [] and second.cursor == first.cursor
    assert "no new valid requests" in second.skip_reason.skip_message

    produce(topic, [url("later").encode()])
    third = tick(instance, second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["127.0.0.1:9/later/repo"]

    # What the previous tick recorded is what the group shows (standard lag tools read this).
    stored = json.loads(third.cursor)["positions"]
    tick(instance, third.cursor)
    consumer = KafkaConsumer(
        bootstrap_servers=os.environ["REPOVAULT_KAFKA_BOOTSTRAP"], group_id=INJECTOR_GROUP
    )
    committed = {int(p): consumer.committed(TopicPartition(topic, int(p))) for p in stored}
    consumer.close()
    assert committed == {int(p): o for p, o in stored.items()}
    assert sum(committed.values()) == 4


def test_a_tick_replayed_from_the_same_cursor_yields_the_same_run_keys(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    produce(vault_env["REPOVAULT_TOPIC_PENDING"], [url(f"replay{i}").encode() for i in range(4)])
    crashed = tick(instance, None)  # a crash here: runs requested, cursor never stored
    replayed = tick(instance, None)
    assert len(crashed.run_requests) == 4
    assert [r.run_key for r in replayed.run_requests] == [r.run_key for r in crashed.run_requests]
    assert [r.tags["repovault/request_id"] for r in replayed.run_requests] == [
        r.tags["repovault/request_id"] for r in crashed.run_requests
    ]


def produce_one_batch(topic: str, partition: int, values: list[bytes]) -> None:
    """`values` in one multi-record batch (Tansu then reports the batch's base offset + 1 as the
    partition's end: short of the real end)."""
    producer = KafkaProducer(
        bootstrap_servers=os.environ["REPOVAULT_KAFKA_BOOTSTRAP"], linger_ms=500
    )
    try:
        futures = [producer.send(topic, value=v, partition=partition) for v in values]
        producer.flush()
        assert [f.get(timeout=10).offset for f in futures] == list(range(len(values)))
    finally:
        producer.close()


def position_resets(topic: str) -> list[dict]:
    return [e for e in read_json(topic) if e.get("kind") == "position_reset"]


def test_a_valid_position_past_the_reported_end_is_never_reset(
    instance: DagsterInstance, vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_INJECTOR_BATCH", "4")
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    produce_one_batch(topic, 0, [url(f"batch{i}").encode() for i in range(10)])

    requests, cursor, ticks = drain(instance)

    # Positions 4 and 8 lie past the end Tansu reports for one 10-record batch (1): the
    # record before each is found, so reading goes on from there instead of starting over.
    assert [r.partition_key for r in requests] == [f"127.0.0.1:9/batch{i}/repo" for i in range(10)]
    assert json.loads(cursor)["positions"]["0"] == 10 and ticks == 4
    assert position_resets(vault_env["REPOVAULT_TOPIC_REJECTED"]) == []
    assert tick(instance, cursor).run_requests == []


def test_a_cursor_past_the_end_of_the_log_resumes_at_its_start_loudly(
    instance: DagsterInstance, vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    produce_one_batch(topic, 0, [url("fresh").encode()])
    # Positions from a log that is gone, in a cursor without the topic's id (as written before
    # ids were kept): the offsets alone must give it away.
    stale = json.dumps({"topic": topic, "positions": {"0": 10, "1": 2, "2": 32}})

    result = tick(instance, stale)

    assert [r.partition_key for r in result.run_requests] == ["127.0.0.1:9/fresh/repo"]
    assert json.loads(result.cursor)["positions"] == {"0": 1, "1": 0, "2": 0}
    events = position_resets(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert sorted((e["partition"], e["offset"], e["resumed_at"]) for e in events) == [
        (0, 10, 0),
        (1, 2, 0),
        (2, 32, 0),
    ]
    assert all(e["topic"] == topic and "past the end of the log" in e["reason"] for e in events)
    warnings = capsys.readouterr().err
    assert f"{topic}[2]: sensor cursor position 32 is past the end of the log" in warnings
    assert "resumed at 0" in warnings


def test_a_group_offset_past_the_end_is_reset_too(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    KafkaGateway(Settings.from_env()).commit(topic, {1: 50})
    produce_one_batch(topic, 1, [url("grouped").encode()])

    result = tick(instance, None)  # no cursor: the group's committed offsets count

    assert [r.partition_key for r in result.run_requests] == ["127.0.0.1:9/grouped/repo"]
    [event] = position_resets(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert (event["partition"], event["offset"], event["resumed_at"]) == (1, 50, 0)
    assert "group offset position 50" in event["reason"]


def test_broker_down_fails_the_tick_clearly_and_loses_nothing(
    instance: DagsterInstance, vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    produce(topic, [url(f"before{i}").encode() for i in range(3)])
    first = tick(instance, None)
    produce(topic, [url(f"during{i}").encode() for i in range(2)])

    port = int(os.environ["REPOVAULT_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    proxy = BreakableProxy(port, break_after=0)
    proxy.broken = True  # refuses every connection: the broker is down
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", f"127.0.0.1:{proxy.port}")
    with pytest.raises(BrokerUnavailable, match=r"Kafka at 127\.0\.0\.1:\d+ .*KAFKA_BOOTSTRAP"):
        tick(instance, first.cursor)
    proxy.close()

    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    back = tick(instance, first.cursor)
    assert sorted(r.partition_key for r in back.run_requests) == [
        "127.0.0.1:9/during0/repo",
        "127.0.0.1:9/during1/repo",
    ]


def test_a_burst_of_5000_drains_over_bounded_ticks_with_every_message_accounted_for(
    instance: DagsterInstance, vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOVAULT_INJECTOR_BATCH", "1000")
    topic = vault_env["REPOVAULT_TOPIC_PENDING"]
    values = [url(f"burst{i}").encode() if i % 10 else b"not a url" for i in range(5000)]
    produce(topic, values)

    requests, cursor, ticks = drain(instance)

    rejected = read_all(vault_env["REPOVAULT_TOPIC_REJECTED"])
    assert len(requests) == 4500 and len(rejected) == 500
    assert len(requests) + len(rejected) == len(values)
    assert len({r.run_key for r in requests}) == 4500
    assert ticks >= 5  # bounded batches: no tick read the whole backlog
    assert sum(json.loads(cursor)["positions"].values()) == 5000


def test_submit_validates_everything_before_publishing(
    vault_env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    KafkaGateway(Settings.from_env()).ensure_topics()
    good = url(f"sub{uuid.uuid4().hex[:6]}")
    assert cli(["submit", good, f"https://u:{TOKEN}@127.0.0.1/a/b"]) == 2
    err = capsys.readouterr().err
    assert "GITHUB_TOKEN" in err and TOKEN not in err and err.count("\n") == 1
    assert read_all(vault_env["REPOVAULT_TOPIC_PENDING"]) == []
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    assert lineage.find(repo_id=good.removeprefix("http://").removesuffix(".git")) == []

    assert cli(["submit", good, url("second")]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2
    messages = read_all(vault_env["REPOVAULT_TOPIC_PENDING"])
    by_key = {m.key.decode(): json.loads(m.value) for m in messages}
    assert set(by_key) == {"127.0.0.1:9/" + good.split("/")[3] + "/repo", "127.0.0.1:9/second/repo"}
    assert sorted(v["request_id"] for v in by_key.values()) == sorted(ids)
    assert {v["source"] for v in by_key.values()} == {"cli"}
    assert {lineage.get(i).status for i in ids} == {"pending"}


def test_submit_with_the_broker_down_exits_1_and_leaves_no_queued_row(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    proxy = BreakableProxy(9, break_after=0)
    proxy.broken = True
    monkeypatch.setenv("REPOVAULT_KAFKA_BOOTSTRAP", f"127.0.0.1:{proxy.port}")
    target = url(f"down{uuid.uuid4().hex[:6]}")
    assert cli(["submit", target]) == 1
    err = capsys.readouterr().err
    assert "Kafka at 127.0.0.1" in err and err.count("\n") == 1
    rows = open_lineage(os.environ["REPOVAULT_DB_URL"]).find(
        repo_id=target.removeprefix("http://").removesuffix(".git")
    )
    assert [r.status for r in rows if r.status in ("pending", "in_progress")] == []
    proxy.close()


def test_a_third_party_source_label_is_recorded_as_given(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    """A producer of our own naming itself (`crm`) gets its run, its row says `crm`."""
    request_id = f"crm-{uuid.uuid4().hex[:8]}"
    message = {"request_id": request_id, "repo_url": url("crm"), "source": "crm"}
    produce(vault_env["REPOVAULT_TOPIC_PENDING"], [json.dumps(message).encode()])

    result = tick(instance, None)

    assert [r.tags["repovault/source"] for r in result.run_requests] == ["crm"]
    row = open_lineage(vault_env["REPOVAULT_DB_URL"]).get(request_id)
    assert (row.status, row.source) == ("pending", "crm")
