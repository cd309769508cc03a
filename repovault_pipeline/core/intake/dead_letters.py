"""The values on `rechazados` (docs/contract.md, "Kafka messages") as pydantic models: the dead
letter of a message that cannot become a run (`DeadLetter`), and the announcement of a stored
position the injector found outside its partition's log (`PositionResetEvent`); `kind` tells
them apart. Both are keyed by the position of the record they are about (`dead_letter_key`),
and `dead_letter_identity` is how a retried tick finds the ones it already published."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from repovault_pipeline.core.common.redact import mask_and_cut, mask_secrets
from repovault_pipeline.core.intake.kafka import PositionReset
from repovault_pipeline.core.intake.messages import IsoTime, Message

MAX_ORIGINAL = 4096  # bytes of a rejected message kept in its dead letter, after masking
MAX_KEY = 256  # characters of its key


class DeadLetter(Message):
    """A `rechazados` value for a message that cannot become a run: why, where the record is,
    its key (masked, at most MAX_KEY characters) and its value with credentials masked, then cut
    to MAX_ORIGINAL bytes (`truncated` says whether it was; non-UTF-8 bytes as `\\xNN`)."""

    kind: Literal["dead_letter"]
    reason: str
    request_id: str
    topic: str
    partition: int
    offset: int
    key: str | None
    original: str
    truncated: bool
    rejected_at: IsoTime


class PositionResetEvent(Message):
    """A `rechazados` value announcing that the injector found a stored position outside its
    partition's log and resumed elsewhere (`kafka.PositionReset`): an operator event in the
    style of a dead letter (`kind` tells them apart), so nothing is ever skipped in silence."""

    kind: Literal["position_reset"]
    reason: str
    request_id: None = None
    topic: str
    partition: int
    offset: int
    cause: str
    log_start: int
    log_end: int
    resumed_at: int
    rejected_at: IsoTime


def dead_letter_key(topic: str, partition: int, offset: int) -> str:
    """The `rechazados` key of the dead letter of one record: where the record is."""
    return f"{topic}:{partition}:{offset}"


def dead_letter(
    reason: str,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    request_id: str,
    key: bytes | None = None,
) -> bytes:
    """The value of a `DeadLetter`: masked first, then cut, so no cut leaves half a secret."""
    original = mask_secrets((value or b"").decode("utf-8", errors="backslashreplace"))
    kept = original.encode("utf-8", "backslashreplace")[:MAX_ORIGINAL].decode("utf-8", "ignore")
    shown_key = key.decode("utf-8", "backslashreplace") if key is not None else None
    return DeadLetter(
        kind="dead_letter",
        reason=mask_secrets(reason),
        request_id=request_id,
        topic=topic,
        partition=partition,
        offset=offset,
        key=mask_and_cut(shown_key, MAX_KEY) if shown_key is not None else None,
        original=kept,
        truncated=len(kept) < len(original),
        rejected_at=datetime.now(UTC),
    ).encode()


def position_reset_event(reset: PositionReset) -> bytes:
    """The value of the `PositionResetEvent` of `reset`."""
    return PositionResetEvent(
        kind="position_reset",
        reason=reset.reason,
        topic=reset.topic,
        partition=reset.partition,
        offset=reset.offset,
        cause=reset.cause,
        log_start=reset.log_start,
        log_end=reset.log_end,
        resumed_at=reset.resumed_at,
        rejected_at=datetime.now(UTC),
    ).encode()


class _Announcement(Message):
    """What identifies a `rechazados` value as the announcement of one event; only these
    fields are read, so older values read too."""

    kind: Literal["dead_letter", "position_reset"]
    topic: str
    partition: int
    offset: int
    request_id: str | None = None


def dead_letter_identity(value: bytes) -> str | None:
    """What makes a `rechazados` record the announcement of one event (the same dead letter,
    the same position reset), or None for a value that is neither: how a retried tick finds
    what an earlier attempt already published. Read with `json.loads`, which takes every text
    `encode` writes (lone surrogates included)."""
    try:
        seen = _Announcement.model_validate(json.loads(value))
    except (ValueError, RecursionError):  # not JSON, or not an announcement
        return None
    return json.dumps([seen.kind, seen.topic, seen.partition, seen.offset, seen.request_id])
