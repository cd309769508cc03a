"""The Kafka message models without a broker: the bytes each writer publishes (field names,
order, optional fields, timestamps as `isoformat`), unknown fields ignored on read, and which
reason a request with several faults is refused for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.dead_letters import (
    DeadLetter,
    PositionResetEvent,
    dead_letter,
    dead_letter_identity,
    position_reset_event,
)
from repovault_pipeline.core.intake.kafka import PAST_END, PositionReset
from repovault_pipeline.core.intake.messages import (
    RejectedMessage,
    StatusEvent,
    parse_request,
    request_message,
    status_event,
)

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
URL = "https://github.com/o/r"


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"REPOVAULT_ALLOWED_HOSTS": "github.com"})


def test_a_request_message_writes_keep_and_force_only_when_given() -> None:
    assert request_message("rid", URL, "cli", AT) == (
        b'{"request_id": "rid", "repo_url": "https://github.com/o/r", "source": "cli", '
        b'"requested_at": "2026-01-02T03:04:05+00:00"}'
    )
    forced = json.loads(request_message("rid", URL, "cli", AT, {"lfs": False}, force=True))
    assert (forced["keep"], forced["force"]) == ({"lfs": False}, True)


def test_a_request_reads_back_and_unknown_fields_are_ignored(settings: Settings) -> None:
    value = json.loads(request_message("rid", URL, "cli", AT, {"wiki": True}))
    read = parse_request(json.dumps({**value, "priority": 9}).encode(), "fallback", settings)
    assert (read.request_id, read.ref.repo_id, read.source) == ("rid", "github.com/o/r", "cli")
    assert (read.requested_at, read.keep, read.force) == (AT, {"wiki": True}, False)
    bare = parse_request(URL.encode(), "fallback", settings)
    assert (bare.request_id, bare.source, bare.requested_at) == ("fallback", "kafka", None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"request_id": "bad id", "repo_url": None}, "no repo_url string"),
        ({"request_id": "bad id", "repo_url": "ext::sh"}, "request_id must be 1-64"),
        ({"source": "e mail", "repo_url": "ext::sh"}, "is not a label"),
        ({"repo_url": "ext::sh", "keep": "no", "force": 1}, "transport helpers"),
        ({"repo_url": URL, "force": 1, "requested_at": "then"}, "force must be true or false"),
    ],
)
def test_a_request_with_several_faults_is_refused_for_the_first(
    settings: Settings, fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(RejectedMessage, match=reason):
        parse_request(json.dumps(fields).encode(), "fallback", settings)


def test_status_events_and_rejections_read_back_as_their_models() -> None:
    event = StatusEvent.model_validate_json(
        status_event("rid", "github.com/o/r", "run", "partial", reasons={"wiki": "gone"}, at=AT)
    )
    assert (event.error, event.reasons, event.at) == ("wiki: gone", {"wiki": "gone"}, AT)
    letter = dead_letter("why", b"\xff", "pendientes", 0, 7, "rid", key=b"k")
    read = DeadLetter.model_validate_json(letter)
    assert (read.original, read.key, read.truncated) == ("\\xff", "k", False)
    reset = PositionReset("pendientes", 0, 50, "group offset", PAST_END, 0, 10, 10)
    announced = position_reset_event(reset)
    assert PositionResetEvent.model_validate_json(announced).reason == reset.reason
    assert dead_letter_identity(announced) == dead_letter_identity(position_reset_event(reset))
    assert dead_letter_identity(letter) != dead_letter_identity(announced)
    assert dead_letter_identity(b'{"kind": "other"}') is None
