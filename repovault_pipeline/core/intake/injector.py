"""The injector's work for one tick, without Dagster: read a bounded batch of `pendientes` from
checked positions, acknowledge the previous tick, validate each message, record lineage, then
dead-letter the bad ones and announce positions that had to be reset.

The caller (the Dagster sensor) turns the accepted requests into run requests and stores the
returned positions in its cursor; the next tick commits those positions to the consumer group.
So a message is acknowledged only once its run request (or its rejection) is recorded. Run keys
derive from request ids, so a replayed tick, a replayed log and a republished request all map
to the run key of the first, which Dagster does not run twice.

Reading and deciding (`plan_tick`) writes nothing, so a test of the sensor shows the plan
(`InjectorPlan.preview`); only `inject`, on a daemon tick, commits, records and publishes.

No message can stop the injector: whatever its bytes, it is accepted or dead-lettered, and the
cursor moves past it. Text is made storable (`lineage.rows.storable`); a row the database still
refuses turns its message into a dead letter that says so, and the other rows are recorded.

Each dead letter is published once, even when a tick fails half way and is retried with the
same cursor (the sensor stores a cursor only when a tick succeeds):
1. rows are recorded first (idempotent upserts), so a database failure publishes nothing;
2. the cursor holds `rejected_marks`, where `rechazados` ended when the last successful tick
   looked; before publishing, the tick reads `rechazados` from there and leaves out every
   dead letter already in it: those an earlier, failed attempt at the same records published
   (in whole or in part) before it failed. A dead letter is known by its record's topic,
   partition, offset and request id (`dead_letters.dead_letter_identity`), and keyed by its
   record's position (`dead_letters.dead_letter_key`);
3. the new marks are where that read ended, so the next tick reads only what was published
   since (this tick's letters, and those of any attempt that fails).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from kafka.consumer.fetcher import ConsumerRecord

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.dead_letters import (
    dead_letter,
    dead_letter_identity,
    dead_letter_key,
    position_reset_event,
)
from repovault_pipeline.core.intake.kafka import Batch, KafkaGateway, PositionReset, TopicMissing
from repovault_pipeline.core.intake.lifecycle import RequestLifecycle
from repovault_pipeline.core.intake.messages import (
    PendingRequest,
    RejectedMessage,
    claimed_request_id,
    message_request_id,
    parse_request,
)
from repovault_pipeline.core.lineage.requests import LineageStore, now
from repovault_pipeline.core.lineage.rows import Injected

log = logging.getLogger(__name__)
SCAN_LIMIT = 100_000  # records of `rechazados` read at most before publishing (see the module)
SCAN_WAIT_S = 30.0


@dataclass(frozen=True)
class Accepted:
    """A valid request and the run key of its run."""

    run_key: str
    request: PendingRequest
    created_at: datetime
    record: ConsumerRecord


@dataclass(frozen=True)
class InjectorCursor:
    """Where the injector continues: the next offset of every partition of `pendientes`, the
    id of the topic those offsets belong to (a recreated topic has a new id), and where
    `rechazados` ended when the injector last looked (`rejected_marks`, see the module)."""

    positions: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None
    rejected_marks: dict[int, int] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None, topic: str) -> InjectorCursor:
        """A cursor written for another topic does not apply."""
        if not raw:
            return cls()
        doc = json.loads(raw)
        if doc.get("topic") != topic:
            return cls()
        return cls(
            _offsets(doc.get("positions")),
            doc.get("topic_id"),
            _offsets(doc.get("rejected_marks")),
        )

    def dump(self, topic: str) -> str:
        return json.dumps(
            {
                "topic": topic,
                "topic_id": self.topic_id,
                "positions": {str(p): o for p, o in sorted(self.positions.items())},
                "rejected_marks": {str(p): o for p, o in sorted(self.rejected_marks.items())},
            }
        )


def _offsets(raw: dict[str, int] | None) -> dict[int, int]:
    return {int(p): int(offset) for p, offset in (raw or {}).items()}


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


@dataclass
class InjectorPlan:
    """What one tick read and decided, before it writes anything: the batch, the accepted
    requests and the rejections (each a dead letter to publish)."""

    batch: Batch
    accepted: list[Accepted]
    rows: _Sorted  # the rows to record and the rejections

    def preview(self, cursor: InjectorCursor) -> str:
        """What applying it would do, for a dry run ("Test sensor")."""
        repos = sorted({a.request.ref.repo_id for a in self.accepted})
        moved = sorted(p for p, o in self.batch.positions.items() if cursor.positions.get(p) != o)
        return (
            f"read {len(self.batch.records)} messages; would record {len(self.rows.injected)} "
            f"pending and {len(self.rows.rejected)} rejected rows, request "
            f"{len(self.accepted)} runs ({', '.join(repos) or 'none'}), dead-letter "
            f"{len(self.rows.rejections)} messages, announce {len(self.batch.resets)} position "
            f"resets, move the cursor of {len(moved)} partitions and commit the previous "
            "tick's offsets to the consumer group"
        )


def plan_tick(settings: Settings, gateway: KafkaGateway, cursor: InjectorCursor) -> InjectorPlan:
    """Read the next batch from the cursor's positions and sort it; writes nothing (the
    topic must exist: TopicMissing otherwise)."""
    batch = gateway.read(
        settings.topics.pending, cursor.positions, settings.injector_batch, topic_id=cursor.topic_id
    )
    accepted: list[Accepted] = []
    rows = _sort_records(settings, batch, accepted)
    return InjectorPlan(batch, accepted, rows)


def inject(
    settings: Settings,
    gateway: KafkaGateway,
    lineage: LineageStore,
    cursor: InjectorCursor,
    *,
    first_tick: bool = False,
) -> TickOutcome:
    """One daemon tick: `plan_tick`, then its writes."""
    if first_tick:
        _ensure_topics(gateway)
    try:
        plan = plan_tick(settings, gateway, cursor)
    except TopicMissing:  # e.g. an in-memory broker restarted: create the topics, read again
        _ensure_topics(gateway)
        plan = plan_tick(settings, gateway, cursor)
    return _apply(settings, gateway, lineage, cursor, plan)


def _apply(
    settings: Settings,
    gateway: KafkaGateway,
    lineage: LineageStore,
    cursor: InjectorCursor,
    plan: InjectorPlan,
) -> TickOutcome:
    """Acknowledge the previous tick, record the rows, publish the dead letters once."""
    topic, batch = settings.topics.pending, plan.batch
    # Acknowledge the previous tick: its positions, where they were still inside the log.
    gateway.commit(topic, {p: batch.starts[p] for p in cursor.positions if p in batch.starts})
    outcome = TickOutcome(
        accepted=list(plan.accepted), read=len(batch.records), resets=batch.resets
    )
    sorted_ = replace(plan.rows)  # `_record` adds the rejections the database causes
    _record(RequestLifecycle(lineage, gateway, settings.topics), sorted_, outcome)
    dead_letters = [r.letter() for r in sorted_.rejections]
    dead_letters += [
        (dead_letter_key(r.topic, r.partition, r.offset), position_reset_event(r))
        for r in batch.resets
    ]
    marks = _publish_once(gateway, settings.topics.rejected, dead_letters, cursor.rejected_marks)
    outcome.cursor = InjectorCursor(batch.positions, batch.topic_id, marks)
    outcome.rejected = len(sorted_.rejections)
    return outcome


def _ensure_topics(gateway: KafkaGateway) -> None:
    created = gateway.ensure_topics()
    if created:
        log.info("created topics %s", ", ".join(created))


@dataclass(frozen=True)
class _Rejection:
    """A record that cannot become a run, and why."""

    record: ConsumerRecord
    request_id: str
    reason: str

    def letter(self) -> tuple[str, bytes]:
        """Its dead letter, keyed by the record's position."""
        r = self.record
        return (
            dead_letter_key(r.topic, r.partition, r.offset),
            dead_letter(
                self.reason, r.value, r.topic, r.partition, r.offset, self.request_id, r.key
            ),
        )


@dataclass
class _Sorted:
    """A batch sorted: the rows to record and the rejected records."""

    injected: list[Injected] = field(default_factory=list)
    rejected: list[Injected] = field(default_factory=list)
    rejections: list[_Rejection] = field(default_factory=list)


def _sort_records(settings: Settings, batch: Batch, accepted: list[Accepted]) -> _Sorted:
    """Validate every record: accepted requests go to `accepted`; returns the lineage of the
    accepted and of the rejected ones, and the rejections."""
    injected_at = now()
    sorted_ = _Sorted()
    accepted_ids: set[str] = set()
    for record in batch.records:
        fallback_id = message_request_id(
            record.topic, record.partition, record.offset, record.timestamp
        )
        record_time = _record_time(record.timestamp, injected_at)
        try:
            request = _parse(record.value, fallback_id, settings)
        except RejectedMessage as exc:
            request_id = claimed_request_id(record.value) or fallback_id
            sorted_.rejections.append(_Rejection(record, request_id, str(exc)))
            original = (record.value or b"").decode("utf-8", "replace")
            sorted_.rejected.append(
                Injected(
                    request_id, original, None, "kafka", record_time, injected_at, error=str(exc)
                )
            )
            continue
        if request.request_id in accepted_ids:  # delivered twice (republished): one run
            continue
        accepted_ids.add(request.request_id)
        created_at = min(request.requested_at or record_time, injected_at)
        accepted.append(Accepted(request_run_key(request.request_id), request, created_at, record))
        sorted_.injected.append(
            Injected(
                request.request_id,
                request.ref.url,
                request.ref.repo_id,
                request.source,
                created_at,
                injected_at,
                keep=request.keep or None,
                force=request.force,
            )
        )
    return sorted_


def _parse(value: bytes | None, fallback_id: str, settings: Settings) -> PendingRequest:
    """`parse_request`, and a message it cannot even read (a bug meeting hostile bytes) is a
    rejection like any other, never an exception that stops the tick."""
    try:
        return parse_request(value, fallback_id, settings)
    except RejectedMessage:
        raise
    except Exception as exc:  # a poison message must not stop the injector
        log.warning("a pendientes message could not be read: %s", type(exc).__name__)
        raise RejectedMessage(
            f"the message could not be read ({type(exc).__name__}): send JSON with repo_url, "
            "or a bare URL string"
        ) from None


def _record_time(timestamp: int, injected_at: datetime) -> datetime:
    """When the record was produced, as its producer said; never later than now, and the time of
    reading when it is absent or cannot be a time."""
    if timestamp < 0:
        return injected_at
    try:
        return min(datetime.fromtimestamp(timestamp / 1000, UTC), injected_at)
    except (OverflowError, OSError, ValueError):
        return injected_at


def _record(requests: RequestLifecycle, sorted_: _Sorted, outcome: TickOutcome) -> None:
    """Record the rows of the batch. A row the database refused is said in its dead letter; an
    accepted request whose row was refused gets no run (a run without its row is not followed)
    but a dead letter."""
    refused = requests.reject(_first_per_request(sorted_.rejected))
    sorted_.rejections = [
        replace(r, reason=f"{r.reason}; {_unrecorded(refused[r.request_id])}")
        if r.request_id in refused
        else r
        for r in sorted_.rejections
    ]
    refused = requests.accept(_first_per_request(sorted_.injected))
    sorted_.rejections += [
        _Rejection(a.record, a.request.request_id, _unrecorded(refused[a.request.request_id]))
        for a in outcome.accepted
        if a.request.request_id in refused
    ]
    outcome.accepted = [a for a in outcome.accepted if a.request.request_id not in refused]


def _unrecorded(refusal: str) -> str:
    return f"the lineage database refused its row ({refusal}); it was not recorded"


def _publish_once(
    gateway: KafkaGateway,
    topic: str,
    letters: list[tuple[str, bytes]],
    marks: dict[int, int],
) -> dict[int, int]:
    """Publish the `letters` that `topic` does not hold yet from `marks` on (see the module);
    returns the new marks."""
    if not letters:
        return marks
    try:
        published = gateway.read(topic, marks, max_records=SCAN_LIMIT, wait_s=SCAN_WAIT_S)
    except TopicMissing:  # a broker restarted empty: nothing was published
        gateway.ensure_topics()
        published = gateway.read(topic, {}, max_records=SCAN_LIMIT, wait_s=SCAN_WAIT_S)
    there = {dead_letter_identity(r.value or b"") for r in published.records}
    missing = [(key, value) for key, value in letters if dead_letter_identity(value) not in there]
    if len(missing) < len(letters):
        log.warning(
            "%d dead letters were already on %s (a tick failed after publishing them): "
            "not published again",
            len(letters) - len(missing),
            topic,
        )
    gateway.publish(topic, missing)
    return published.positions


def _first_per_request(rows: list[Injected]) -> list[Injected]:
    """One row per request id: a batched upsert may not touch the same row twice."""
    seen: dict[str, Injected] = {}
    for row in rows:
        seen.setdefault(row.request_id, row)
    return list(seen.values())
