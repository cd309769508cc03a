"""No `pendientes` message can stop the injector, and each rejection is announced once: hostile
bytes (NUL, lone surrogates, invalid UTF-8, 1 MB, deep nesting, odd keys, headers and
timestamps) are dead-lettered through a real tick against the broker and PostgreSQL, the valid
request behind them becomes a run request and a row, the cursor moves past all of them, and a
tick that fails (database down) or whose cursor is lost (the daemon died before storing it)
and is run again publishes no dead letter twice. Ends with a Hypothesis fuzz of the same path."""

from __future__ import annotations

import json
import string
import uuid
from dataclasses import dataclass

import pytest
from dagster import DagsterInstance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from sqlalchemy import create_engine, text

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.messages import parse_request
from repovault_pipeline.core.lineage.requests import open_lineage
from tests.conftest import PG_ADMIN_URL
from tests.support.injector import injector_tick as tick
from tests.support.kafka import bootstrap, dead_letters, read_all


@dataclass(frozen=True)
class Message:
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


def produce(topic: str, messages: list[Message]) -> list[int]:
    """Send each message to partition 0, in order; returns their offsets."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap(), acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024
    )
    try:
        futures = [
            producer.send(
                topic,
                value=m.value,
                key=m.key,
                headers=list(m.headers),
                partition=0,
                timestamp_ms=m.timestamp_ms,
            )
            for m in messages
        ]
        return [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close()


def valid(name: str) -> Message:
    return Message(f"http://127.0.0.1:9/{name}/repo.git".encode())


HOSTILE = [
    Message(b"http://127.0.0.1:9/o/nul\x00.git"),  # NUL: PostgreSQL refuses it in text
    Message(b"\x00"),
    Message(b'{"repo_url": "http://127.0.0.1:9/o/r\\u0000.git", "source": "a\\u0000b"}'),
    Message(b'{"repo_url": "http://127.0.0.1:9/o/\\ud800.git"}'),  # a lone surrogate
    Message(b'{"repo_url": "\\udfff", "request_id": "\\ud800"}'),
    Message(b"http://127.0.0.1:9/o/\xed\xa0\x80.git"),  # a surrogate as bytes: not UTF-8
    Message(b"\xff\xfe\x00 not utf-8"),
    Message(b"[" * 200_000),  # nesting deeper than any parser's recursion
    Message(b"http://127.0.0.1:9/o/" + b"x\x00" * 500_000),  # 1 MB
    Message(
        b'{"repo_url": "http://127.0.0.1:9/o/r.git", "requested_at": "9999-12-31T23:59:59-23:59"}'
    ),
    Message(b"ext::sh", key=b"\x00\xff" * 5000, headers=(("h\x00", b"\xff\x00"), ("", b""))),
    Message(None, key=b"tombstone"),
    Message(b"http://127.0.0.1:9/o/r.git?x=1", timestamp_ms=2**62),  # far future
]


def test_hostile_messages_are_dead_lettered_once_and_the_valid_one_runs(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    pending, rejected = vault_env["REPOVAULT_TOPIC_PENDING"], vault_env["REPOVAULT_TOPIC_REJECTED"]
    name = f"after-{uuid.uuid4().hex[:8]}"
    offsets = produce(pending, [*HOSTILE, valid(name)])

    first = tick(instance)

    assert [r.partition_key for r in first.run_requests] == [f"127.0.0.1:9/{name}/repo"]
    assert json.loads(first.cursor)["positions"]["0"] == offsets[-1] + 1
    letters = dead_letters(rejected, quiet_s=0.5)
    assert sorted((d["partition"], d["offset"]) for d in letters) == [(0, o) for o in offsets[:-1]]
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    for letter in letters:
        row = lineage.get(letter["request_id"])
        assert row is not None and row.status == "rejected", letter
        assert "\x00" not in row.repo_url + (row.error or "")
    nul_row = lineage.get(letters[0]["request_id"])
    assert nul_row.repo_url == "http://127.0.0.1:9/o/nul\\x00.git"  # NUL kept, as an escape
    assert len(letters[8]["original"].encode()) <= 4096 and letters[8]["truncated"]
    accepted = lineage.get(first.run_requests[0].tags["repovault/request_id"])
    assert accepted is not None and accepted.status == "pending"

    # The daemon died before it stored the cursor: the same records are read again, the same
    # run key is requested (Dagster runs it once), and no dead letter is published twice.
    again = tick(instance)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert dead_letters(rejected, quiet_s=0.5) == letters


def test_a_tick_the_database_fails_publishes_nothing_and_its_retry_publishes_once(
    instance: DagsterInstance, vault_env: dict[str, str], private_lineage: str
) -> None:
    """The database fails the tick's writes (read-only, as in a failover): the tick fails
    before announcing anything; the retry records the rows and publishes each letter once."""
    open_lineage(private_lineage).dispose()
    pending, rejected = vault_env["REPOVAULT_TOPIC_PENDING"], vault_env["REPOVAULT_TOPIC_REJECTED"]
    offsets = produce(pending, [Message(b"\x00"), Message(b"ext::sh"), valid("retried")])
    read_only(private_lineage, True)
    try:
        with pytest.raises(Exception, match="read-only transaction"):
            tick(instance)
    finally:
        read_only(private_lineage, False)
    assert read_all(rejected, quiet_s=0.5) == []  # rows first: nothing was announced

    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["127.0.0.1:9/retried/repo"]
    assert [d["offset"] for d in dead_letters(rejected, quiet_s=0.5)] == offsets[:2]


def read_only(db_url: str, on: bool) -> None:
    """New sessions of the database at `db_url` are read-only (or no longer)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f'ALTER DATABASE "{db_url.rsplit("/", 1)[1]}" '
            f"SET default_transaction_read_only = {'on' if on else 'off'}"
        )
    admin.dispose()


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_are_recorded(
    instance: DagsterInstance, vault_env: dict[str, str], private_lineage: str
) -> None:
    """Whatever a database may refuse beyond NUL (here a constraint an operator added), the
    message goes to `rechazados` with the database's reason and stops nothing."""
    open_lineage(private_lineage).dispose()
    engine = create_engine(private_lineage)
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE repo_requests ADD CONSTRAINT no_refuse_me "
                "CHECK (repo_url NOT LIKE '%refuse-me%')"
            )
        )
    engine.dispose()
    pending, rejected = vault_env["REPOVAULT_TOPIC_PENDING"], vault_env["REPOVAULT_TOPIC_REJECTED"]
    offsets = produce(
        pending,
        [valid("refuse-me"), Message(b"ext::refuse-me"), Message(b"ext::kept"), valid("kept")],
    )

    result = tick(instance)

    assert [r.partition_key for r in result.run_requests] == ["127.0.0.1:9/kept/repo"]
    assert json.loads(result.cursor)["positions"]["0"] == offsets[-1] + 1
    letters = {d["offset"]: d for d in dead_letters(rejected, quiet_s=0.5)}
    assert sorted(letters) == offsets[:3]
    for offset in offsets[:2]:
        assert "the lineage database refused its row (CheckViolation" in letters[offset]["reason"]
    assert "refused its row" not in letters[offsets[2]]["reason"]
    lineage = open_lineage(private_lineage)
    assert lineage.get(letters[offsets[0]]["request_id"]) is None
    assert lineage.get(letters[offsets[2]]["request_id"]).status == "rejected"


# Hostile material the fuzz combines: raw bytes, JSON with any text (NUL and lone surrogates
# included: json.dumps writes them as \u escapes) in any field, and plausible URLs gone wrong.
_any_text = st.text(
    st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udc80", "%", "@", ":", "/"])),
    max_size=40,
)
_json_request = st.fixed_dictionaries(
    {},
    optional={
        "repo_url": st.one_of(_any_text, st.just("http://127.0.0.1:9/o/r.git")),
        "request_id": _any_text,
        "source": _any_text,
        "requested_at": _any_text,
        "keep": st.one_of(_any_text, st.dictionaries(_any_text, st.booleans(), max_size=2)),
    },
).map(lambda doc: json.dumps(doc).encode())
_url_like = _any_text.map(lambda t: f"http://127.0.0.1:9/o/{t}".encode("utf-8", "surrogatepass"))
_hostile = st.builds(
    Message,
    value=st.one_of(st.binary(max_size=300), _json_request, _url_like, st.none()),
    key=st.one_of(st.none(), st.binary(max_size=50)),
    headers=st.lists(
        st.tuples(st.text(string.printable, max_size=8), st.binary(max_size=20)), max_size=2
    ).map(tuple),
).filter(lambda m: m.value is not None or m.key is not None)  # a producer sends one of them


def test_fuzzed_messages_never_stop_the_injector(
    instance: DagsterInstance, vault_env: dict[str, str]
) -> None:
    """Each example: a few fuzzed messages, then a valid one, one tick from the last cursor;
    everything on one topic pair (one broker topic per run). Each fuzzed message is a dead
    letter exactly when the injector's validation refuses it, and then exactly once."""
    pending, rejected = vault_env["REPOVAULT_TOPIC_PENDING"], vault_env["REPOVAULT_TOPIC_REJECTED"]
    checker = Settings.from_env()
    cursor: list[str | None] = [None]
    refused: list[int] = []

    @settings(
        max_examples=4,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(_hostile, min_size=1, max_size=4))
    def one_tick(messages: list[Message]) -> None:
        name = f"fuzz-{uuid.uuid4().hex[:8]}"
        offsets = produce(pending, [*messages, valid(name)])
        # Usually one tick; a tick whose fetch the broker cut short reads less (CI once read
        # 0 messages after a reset connection) and the next ticks go on from its cursor.
        wanted, requested = f"127.0.0.1:9/{name}/repo", []
        for _ in range(5):
            result = tick(instance, cursor[0])
            cursor[0] = result.cursor or cursor[0]  # as the daemon keeps it when none is set
            requested += [r.partition_key for r in result.run_requests]
            if wanted in requested:
                break
        assert wanted in requested
        assert json.loads(cursor[0])["positions"]["0"] == offsets[-1] + 1
        refused.extend(o for m, o in zip(messages, offsets, strict=False) if _refused(m, checker))

    one_tick()

    assert [d["offset"] for d in dead_letters(rejected, quiet_s=0.5)] == refused


def _refused(message: Message, checker: Settings) -> bool:
    try:
        parse_request(message.value, "fallback-id", checker)
    except Exception:  # the injector dead-letters whatever validation cannot accept
        return True
    return False
