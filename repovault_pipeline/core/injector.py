"""The injector's work for one tick, without Dagster: acknowledge the previous tick, read a
bounded batch of `pendientes`, validate each message, dead-letter the bad ones, record lineage.

The caller (the Dagster sensor) turns the accepted requests into run requests and stores the
returned positions in its cursor; the next tick commits those positions to the consumer group.
So a message is acknowledged only once its run request (or its rejection) is recorded, and a
replay after a crash yields the same run keys, which Dagster does not run twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .kafka import KafkaGateway
from .lineage import Injected, LineageStore, now
from .messages import (
    PendingRequest,
    RejectedMessage,
    claimed_request_id,
    dead_letter,
    message_request_id,
    parse_request,
)
from .redact import mask_secrets
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A valid request and the run key of the message it came from."""

    run_key: str
    request: PendingRequest
    created_at: datetime


@dataclass
class TickOutcome:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: int = 0
    read: int = 0
    positions: dict[int, int] = field(default_factory=dict)


def run_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def inject(
    settings: Settings,
    gateway: KafkaGateway,
    lineage: LineageStore,
    positions: dict[int, int],
    *,
    first_tick: bool = False,
) -> TickOutcome:
    topic = settings.topics.pending
    if first_tick:
        created = gateway.ensure_topics()
        if created:
            log.info("created topics %s", ", ".join(created))
    gateway.commit(topic, positions)
    batch = gateway.read(topic, positions, settings.injector_batch)
    outcome = TickOutcome(read=len(batch.records), positions=batch.positions)
    injected_at = now()
    injected: list[Injected] = []
    rejected: list[Injected] = []
    dead_letters: list[tuple[str | None, bytes]] = []
    for record in batch.records:
        fallback_id = message_request_id(record.topic, record.partition, record.offset)
        record_time = (
            datetime.fromtimestamp(record.timestamp / 1000, UTC)
            if record.timestamp >= 0
            else injected_at
        )
        try:
            request = parse_request(record.value, fallback_id, settings)
        except RejectedMessage as exc:
            request_id = claimed_request_id(record.value) or fallback_id
            key = mask_secrets(record.key.decode("utf-8", "replace")) if record.key else None
            dead_letters.append(
                (
                    key,
                    dead_letter(
                        str(exc),
                        record.value,
                        record.topic,
                        record.partition,
                        record.offset,
                        request_id,
                    ),
                )
            )
            original = (record.value or b"").decode("utf-8", "replace")
            rejected.append(
                Injected(
                    request_id,
                    original,
                    None,
                    "kafka",
                    min(record_time, injected_at),
                    injected_at,
                    error=str(exc),
                )
            )
            continue
        created_at = min(request.requested_at or record_time, injected_at)
        outcome.accepted.append(
            Accepted(run_key(record.topic, record.partition, record.offset), request, created_at)
        )
        injected.append(
            Injected(
                request.request_id,
                request.ref.url,
                request.ref.repo_id,
                request.source,
                created_at,
                injected_at,
            )
        )
    gateway.publish(settings.topics.rejected, dead_letters)
    lineage.record_rejected(rejected)
    lineage.record_injected(injected)
    outcome.rejected = len(rejected)
    return outcome
