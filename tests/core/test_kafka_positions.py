"""Where the injector may continue reading (pure logic): a stored position against the log the
broker reports, and the cursor that carries positions and the topic's id between ticks.

The broker-facing paths (probe, reset, event) run against real brokers in
tests/sensors/test_kafka_injector.py and tests/sensors/test_broker_reset.py; Tansu never lets
retention move a log's start, so "before the start" is proven here."""

from __future__ import annotations

import json

import pytest

from repovault_pipeline.core.intake.dead_letters import position_reset_event
from repovault_pipeline.core.intake.injector import InjectorCursor, request_run_key
from repovault_pipeline.core.intake.kafka import (
    BEFORE_START,
    PAST_END,
    RECREATED,
    PositionReset,
    check_position,
)
from repovault_pipeline.core.intake.messages import message_request_id


@pytest.mark.parametrize(
    ("position", "log_start", "log_end", "probe", "expected"),
    [
        (0, 0, 0, None, None),  # empty log, nothing read yet
        (5, 0, 10, None, None),  # inside the log
        (10, 0, 10, None, None),  # at the end: waiting for the next message
        (10, 10, 10, None, None),  # retention emptied the log exactly up to us
        (3, 5, 12, None, BEFORE_START),  # offsets 3 and 4 expired unread
        (0, 1, 1, None, BEFORE_START),
        (32, 0, 1, None, PAST_END),  # not probed yet: out of range until a record is found
        (32, 0, 1, False, PAST_END),  # probed: nothing at 31 or later
        (10, 0, 1, True, None),  # Tansu reported 1 after a 10-record batch; record 9 exists
        (3, 5, 4, True, BEFORE_START),  # a probe cannot excuse a position before the start
    ],
)
def test_a_position_is_reset_only_when_it_is_outside_the_log(
    position: int, log_start: int, log_end: int, probe: bool | None, expected: str | None
) -> None:
    assert check_position(position, log_start, log_end, probe) == expected


def test_the_reset_reason_names_partition_position_log_and_resume_point() -> None:
    past = PositionReset("pendientes", 2, 32, "sensor cursor", PAST_END, 0, 1, 0)
    assert past.reason == (
        "pendientes[2]: sensor cursor position 32 is past the end of the log (the broker "
        "restarted with an empty log or the topic was recreated); the log holds offsets 0 to 0 "
        "as the broker reports it; reading resumed at 0, the start of the log"
    )
    before = PositionReset("pendientes", 0, 3, "group offset", BEFORE_START, 5, 5, 5)
    assert "offsets 3..4 before they were read" in before.reason
    assert "no records (next offset 5)" in before.reason
    assert "resumed at 5" in before.reason
    recreated = PositionReset("pendientes", 1, 7, "sensor cursor", RECREATED, 0, 3, 0)
    assert "topic id changed" in recreated.reason

    event = json.loads(position_reset_event(past))
    assert {k: event[k] for k in ("kind", "topic", "partition", "offset", "resumed_at")} == {
        "kind": "position_reset",
        "topic": "pendientes",
        "partition": 2,
        "offset": 32,
        "resumed_at": 0,
    }
    assert event["reason"] == past.reason and event["rejected_at"]


def test_the_cursor_round_trips_and_ignores_another_topic() -> None:
    cursor = InjectorCursor({0: 10, 2: 32, 1: 2}, "01a2-topic-id")
    raw = cursor.dump("pendientes")
    assert InjectorCursor.load(raw, "pendientes") == cursor
    assert InjectorCursor.load(raw, "other") == InjectorCursor()
    assert InjectorCursor.load(None, "pendientes") == InjectorCursor()
    # A cursor written before topic ids were kept still carries its positions.
    old = json.dumps({"topic": "pendientes", "positions": {"0": 4}})
    assert InjectorCursor.load(old, "pendientes") == InjectorCursor({0: 4}, None)


def test_a_new_message_at_a_reused_offset_is_a_new_request() -> None:
    first = message_request_id("pendientes", 0, 0, 1_790_000_000_000)
    assert first == message_request_id("pendientes", 0, 0, 1_790_000_000_000)  # a replay
    assert first != message_request_id("pendientes", 0, 0, 1_790_000_123_456)  # a reset log
    assert request_run_key("abc") == "request:abc"
