"""The injector's work for one tick, without Dagster: read a bounded batch of `pendientes` from
checked positions, acknowledge the previous tick, validate each message, dead-letter the bad
ones, announce positions that had to be reset, record lineage.

The caller (the Dagster sensor) turns the accepted requests into run requests and stores the
returned positions in its cursor; the next tick commits those positions to the consumer group.
So a message is acknowledged only once its run request (or its rejection) is recorded. Run keys
derive from request ids, so a replayed tick, a replayed log and a republished request all map
to the run key of the first, which Dagster does not run twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .kafka import Batch, KafkaGateway, PositionReset, TopicMissing
from .lineage import Injected, LineageStore, now
from .messages import (
    PendingRequest,
    RejectedMessage,
    claimed_request_id,
    dead_letter,
    message_request_id,
    parse_request,
    position_reset_event,
)
from .redact import mask_secrets
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A valid request and the run key of its run."""

    run_key: str
    request: PendingRequest
    created_at: datetime


@dataclass(frozen=True)
class InjectorCursor:
    """Where the injector continues: the next offset of every partition of `pendientes`, and the
    id of the topic those offsets belong to (a recreated topic has a new id)."""

    positions: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None

    @classmethod
    def load(cls, raw: str | None, topic: str) -> InjectorCursor:
        """A cursor written for another topic does not apply."""
        if not raw:
            return cls()
        doc = json.loads(raw)
        if doc.get("topic") != topic:
            return cls()
        positions = {int(p): int(offset) for p, offset in doc.get("positions", {}).items()}
        return cls(positions, doc.get("topic_id"))

    def dump(self, topic: str) -> str:
        return json.dumps(
            {
                "topic": topic,
                "topic_id": self.topic_id,
                "positions": {str(p): o for p, o in sorted(self.positions.items())},
            }
        )


@dataclass
class TickOutcome:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: int = 0
    read: int = 0
    cursor: InjectorCursor = field(default_factory=InjectorCursor)
    resets: list[PositionReset] = field(default_factory=list)


def request_run_key(request_id: str) -> str:
    """One request, one run: whatever delivered the request (first read, replay, republish)."""
    return f"request:{request_id}"


def inject(
    settings: Settings,
    gateway: KafkaGateway,
    lineage: LineageStore,
    cursor: InjectorCursor,
    *,
    first_tick: bool = False,
) -> TickOutcome:
    topic = settings.topics.pending
    if first_tick:
        _ensure_topics(gateway)
    limit = settings.injector_batch
    try:
        batch = gateway.read(topic, cursor.positions, limit, topic_id=cursor.topic_id)
    except TopicMissing:  # e.g. an in-memory broker restarted: create the topics, read again
        _ensure_topics(gateway)
        batch = gateway.read(topic, cursor.positions, limit, topic_id=cursor.topic_id)
    # Acknowledge the previous tick: its positions, where they were still inside the log.
    gateway.commit(topic, {p: batch.starts[p] for p in cursor.positions if p in batch.starts})
    outcome = TickOutcome(
        read=len(batch.records),
        cursor=InjectorCursor(batch.positions, batch.topic_id),
        resets=batch.resets,
    )
    injected, rejected, dead_letters = _sort_records(settings, batch, outcome)
    dead_letters += [(f"{r.topic}:{r.partition}", position_reset_event(r)) for r in batch.resets]
    gateway.publish(settings.topics.rejected, dead_letters)
    lineage.record_rejected(_first_per_request(rejected))
    lineage.record_injected(_first_per_request(injected))
    outcome.rejected = len(rejected)
    return outcome


def _ensure_topics(gateway: KafkaGateway) -> None:
    created = gateway.ensure_topics()
    if created:
        log.info("created topics %s", ", ".join(created))


def _sort_records(
    settings: Settings, batch: Batch, outcome: TickOutcome
) -> tuple[list[Injected], list[Injected], list[tuple[str | None, bytes]]]:
    """Validate every record: accepted requests go to `outcome`; returns the lineage of the
    accepted and of the rejected ones, and the dead letters."""
    injected_at = now()
    injected: list[Injected] = []
    rejected: list[Injected] = []
    dead_letters: list[tuple[str | None, bytes]] = []
    accepted_ids: set[str] = set()
    for record in batch.records:
        fallback_id = message_request_id(
            record.topic, record.partition, record.offset, record.timestamp
        )
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
        if request.request_id in accepted_ids:  # delivered twice (republished): one run
            continue
        accepted_ids.add(request.request_id)
        created_at = min(request.requested_at or record_time, injected_at)
        outcome.accepted.append(Accepted(request_run_key(request.request_id), request, created_at))
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
    return injected, rejected, dead_letters


def _first_per_request(rows: list[Injected]) -> list[Injected]:
    """One row per request id: a batched upsert may not touch the same row twice."""
    seen: dict[str, Injected] = {}
    for row in rows:
        seen.setdefault(row.request_id, row)
    return list(seen.values())
