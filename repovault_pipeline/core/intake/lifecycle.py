"""A request's life, written once: queued or accepted (`pending`), started (`in_progress`),
retried, then closed `completed`, `unchanged`, `partial`, `failed` or `rejected`.

Each step is recorded in lineage (`repo_requests`, the record) before it is announced on Kafka
(`pendientes` for a request to run, `en_proceso` / `completados` for its status), so nothing is
announced that the table does not hold. Status events are best effort: a broker outage is
logged and the row stays the truth. A request the broker never took is closed `failed` at once
(no event: there is no broker to carry it). The archive ops, `repo_metadata`, the reconciler,
submit, refresh, the trending intake and the injector all go through `RequestLifecycle`; only
the fleet sensors, which ask Dagster for their runs directly, record `pending` rows themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from repovault_pipeline.core.common.settings import Topics
from repovault_pipeline.core.intake.kafka import BrokerUnavailable
from repovault_pipeline.core.intake.messages import request_message, status_event
from repovault_pipeline.core.lineage.requests import LineageStore, now, reasons_line
from repovault_pipeline.core.lineage.rows import Injected, Request
from repovault_pipeline.core.vault.outcome import ArchiveResult

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where requests and status events go (`KafkaGateway`)."""

    def publish(self, topic: str, messages: Sequence[tuple[str | None, bytes]]) -> None:
        """Send and wait for the broker's acknowledgement; raises `BrokerUnavailable`."""

    def publish_status(
        self, topic: str, key: str, event: bytes, logger: logging.Logger | None = None
    ) -> bool:
        """Send a status event, best effort."""


class SnapshotLog(Protocol):
    """Where the refs of a request's snapshot are kept for refresh (`FleetStore.repo_state`)."""

    def record_snapshot(
        self,
        repo_id: str,
        repo_url: str,
        digest: str,
        snapshot_id: str | None,
        at: datetime,
        wiki_digest: str | None = None,
    ) -> None:
        """The refs (and the wiki's) a committed or confirmed snapshot holds."""


@dataclass(frozen=True)
class NewRequest:
    """A request to queue on `pendientes`; without `request_id` a new one is made, without
    `requested_at` it is requested now."""

    repo_url: str
    repo_id: str
    source: str
    request_id: str | None = None
    requested_at: datetime | None = None
    keep: dict[str, bool] | None = None  # its own choice of extras; None: the defaults
    force: bool = False  # a fresh full snapshot even if nothing changed


@dataclass(frozen=True)
class Outcome:
    """How a request ends: its final status and what goes with it, in the row and the event."""

    status: str
    snapshot_id: str | None = None
    head_commit: str | None = None
    bytes_uploaded: int | None = None
    error: str | None = None
    reasons: dict[str, str] | None = None  # why it is `partial`: name -> detail

    @classmethod
    def of(cls, result: ArchiveResult) -> Outcome:
        """What a run that wrote (or confirmed) a snapshot ends with."""
        return cls(
            result.status,
            result.snapshot_id,
            result.head_commit,
            result.bytes_uploaded,
            reasons=result.reasons,
        )


class RequestLifecycle:
    """Moves requests through their statuses: each step writes the row, then announces it."""

    def __init__(
        self,
        lineage: LineageStore,
        events: Publisher,
        topics: Topics,
        fleet: SnapshotLog | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """`fleet` is needed only to `finish` a run that wrote a snapshot."""
        self.lineage = lineage
        self.events = events
        self.topics = topics
        self.fleet = fleet
        self.log = logger or log

    # ------------------------------------------------------------------ pending

    def queue(self, request: NewRequest) -> str:
        """A `pending` row, then the request on `pendientes`, acknowledged by the broker;
        returns its request id. A broker lost on the way closes the row `failed` (not queued)
        and raises `BrokerUnavailable`."""
        request_id, message = self._pending(request)
        try:
            self.events.publish(self.topics.pending, [(request.repo_id, message)])
        except BrokerUnavailable as exc:
            self.lineage.record_finished(request_id, "failed", error=f"not queued: {exc}")
            raise
        return request_id

    def queue_all(self, requests: Sequence[NewRequest]) -> list[str]:
        """`pending` rows for all, then one batch on `pendientes`. A lost broker raises and
        leaves the rows `pending`: the reconciler publishes them again (a re-executed batch
        with the same request ids writes no new row)."""
        recorded = [self._pending(request) for request in requests]
        self.events.publish(
            self.topics.pending,
            [(r.repo_id, message) for r, (_, message) in zip(requests, recorded, strict=True)],
        )
        return [request_id for request_id, _ in recorded]

    def republish(self, rows: Sequence[Request]) -> None:
        """`pending` requests published again as they were asked (same request id, so the
        injector's run key never makes a second run of one)."""
        self.events.publish(
            self.topics.pending,
            [
                (
                    row.repo_id,
                    request_message(
                        row.request_id,
                        row.repo_url,
                        row.source,
                        row.creation_timestamp,
                        row.keep,
                        row.force,
                    ),
                )
                for row in rows
            ],
        )

    def accept(self, requests: Sequence[Injected]) -> dict[str, str]:
        """The injector read these requests: their `pending` rows, created for those a third
        party published. Returns those the database refused, with why."""
        return self.lineage.record_injected(requests)

    def reject(self, requests: Sequence[Injected]) -> dict[str, str]:
        """Requests that can never run: `rejected` with their reason (a `pending` row only; a
        bad message claiming a request id never closes its row). Returns those the database
        refused, with why."""
        return self.lineage.record_rejected(requests)

    # ------------------------------------------------------------------ running

    def start(
        self,
        request_id: str,
        repo_url: str,
        repo_id: str,
        source: str,
        run_id: str,
        *,
        created_at: datetime | None = None,
        retry_number: int = 0,
    ) -> None:
        """The run started the request, announced on `en_proceso` once: a retried step
        (`retry_number` > 0) only keeps the row saying why the previous attempt failed."""
        self.lineage.record_started(
            request_id,
            repo_url,
            repo_id,
            source,
            run_id,
            created_at=created_at,
            keep_error=retry_number > 0,
        )
        if retry_number == 0:
            event = status_event(request_id, repo_id, run_id, "in_progress")
            self.events.publish_status(self.topics.in_progress, repo_id, event, self.log)

    def retrying(self, request_id: str, attempt: int, attempts: int, reason: str) -> None:
        """Attempt `attempt` of `attempts` failed for a transient reason: the `in_progress`
        row says so until it ends. No event: the request has not changed status."""
        self.lineage.record_retrying(request_id, attempt, attempts, reason)

    # ------------------------------------------------------------------ closing

    def finish(self, request_id: str, run_id: str, result: ArchiveResult) -> None:
        """The run wrote (or confirmed) its snapshot: the row closes with the result's status
        (`partial` when a part it asked to keep is missing), refresh learns the refs the
        snapshot holds, and `completados` hears of it."""
        outcome, finished_at = Outcome.of(result), now()
        if result.reasons:
            self.log.warning(f"{result.repo_id} is partial: {reasons_line(result.reasons)}")
        self._record(request_id, outcome, finished_at)
        if result.refs_digest and self.fleet is not None:
            self.fleet.record_snapshot(
                result.repo_id,
                result.repo_url,
                result.refs_digest,
                result.snapshot_id,
                finished_at,
                wiki_digest=result.wiki_refs_digest,
            )
        self._announce(request_id, result.repo_id, run_id, outcome, finished_at)

    def fail(self, request_id: str, repo_id: str, run_id: str | None, reason: str) -> None:
        """The run failed: the row closes `failed` with `reason`, announced."""
        self.close(request_id, repo_id, run_id, Outcome("failed", error=reason))

    def close(
        self,
        request_id: str,
        repo_id: str,
        run_id: str | None,
        outcome: Outcome,
        *,
        only_status: str | None = None,
        only_run_id: str | None = None,
    ) -> bool:
        """Close the row with `outcome` and announce it. With `only_status` / `only_run_id`
        (what the reconciler saw), a row that changed meanwhile is left alone and nothing is
        announced; returns whether the row was closed."""
        finished_at = now()
        if not self._record(request_id, outcome, finished_at, only_status, only_run_id):
            return False
        self._announce(request_id, repo_id, run_id, outcome, finished_at)
        return True

    def part_failed(
        self, request_id: str, repo_id: str, run_id: str, reason: str, detail: str
    ) -> Request | None:
        """A part that runs after the request closed (the forge metadata) failed: a finished
        row becomes `partial` with `reason`, and a second `completados` event says so (the
        last one is the truth). None, and no event, when the request has no finished row."""
        row = self.lineage.record_part_failed(request_id, reason, detail)
        if row is None:
            return None
        self.log.warning(f"request {row.request_id} is partial: {row.error}")
        outcome = Outcome(row.status, row.snapshot_id, row.head_commit, reasons=row.reasons)
        self._announce(row.request_id, repo_id, run_id, outcome, now())
        return row

    # ------------------------------------------------------------------ helpers

    def _pending(self, request: NewRequest) -> tuple[str, bytes]:
        """Record the `pending` row (a no-op for a known request id); its `pendientes` message."""
        requested_at = request.requested_at or now()
        request_id = self.lineage.record_pending(
            request.repo_url,
            request.repo_id,
            request.source,
            request_id=request.request_id,
            created_at=requested_at,
            keep=request.keep,
            force=request.force,
        )
        message = request_message(
            request_id, request.repo_url, request.source, requested_at, request.keep, request.force
        )
        return request_id, message

    def _record(
        self,
        request_id: str,
        outcome: Outcome,
        at: datetime,
        only_status: str | None = None,
        only_run_id: str | None = None,
    ) -> bool:
        return self.lineage.record_finished(
            request_id,
            outcome.status,
            snapshot_id=outcome.snapshot_id,
            head_commit=outcome.head_commit,
            bytes_uploaded=outcome.bytes_uploaded,
            error=outcome.error,
            reasons=outcome.reasons,
            finished_at=at,
            only_status=only_status,
            only_run_id=only_run_id,
        )

    def _announce(
        self, request_id: str, repo_id: str, run_id: str | None, outcome: Outcome, at: datetime
    ) -> None:
        """The `completados` event of a closed request (best effort)."""
        event = status_event(
            request_id,
            repo_id,
            run_id,
            outcome.status,
            snapshot_id=outcome.snapshot_id,
            head_commit=outcome.head_commit,
            error=outcome.error,
            reasons=outcome.reasons,
            at=at,
        )
        self.events.publish_status(self.topics.completed, repo_id, event, self.log)
