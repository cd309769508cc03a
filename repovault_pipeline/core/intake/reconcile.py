"""Reconciliation: the lineage table is the record, and every request in it must end.

A row can be left open by what no step of a run can report: a worker killed mid-run (the row
stays `in_progress`), the lineage database down while `record_lineage` runs (the snapshot is in
the bucket, the row still `in_progress`), a request whose message never reached the injector (a
broker that restarted with an empty log: the row stays `pending`). One pass here, run by
`reconcile_sensor` on a daemon tick, settles them from what Dagster and the bucket know
(`Reconciler.plan` only looks, so a test of the sensor shows the plan; `apply` writes):

- an `in_progress` row whose run has ended (or no longer exists) gets the run's outcome: a
  committed snapshot that carries the row's request id makes it `completed`; else the outcome
  the run's `upload_snapshot` step recorded in its output metadata; else `failed` with the run's
  failure reason. The matching `completados` event is published.
- an `in_progress` row whose run is still STARTED but whose bucket lease, held by that run, has
  not been renewed for REPOVAULT_ORPHAN_AFTER_TTLS lease TTLs is an orphan: its worker is gone
  (killed with its code server, say), and nothing else would end the run before its
  `dagster/max_runtime`. The lease is marked `interrupted` (conditionally: a renewal meanwhile
  means the worker lives, and nothing is done), the run is marked failed, and the row closed
  `failed` with when the worker stopped renewing. A started run that holds no lease (it died
  while cloning) is left to run monitoring: nothing in the bucket tells a dead clone from a
  long one.
- a `pending` row older than REPOVAULT_REPUBLISH_AFTER_S with no run tagged with its request id
  is published again to `pendientes` (same request id, so the injector's run key makes a second
  run impossible), at most MAX_REPUBLISH times; then it is closed `failed` with the reason.

Free of Dagster: the runs are seen through the small `RunHistory` protocol (runs.py); rows
close and events go out through the request lifecycle (lifecycle.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from repovault_pipeline.core.common.errors import PreconditionFailed
from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.lifecycle import Outcome, RequestLifecycle
from repovault_pipeline.core.intake.runs import RecordedOutcome, RunHistory
from repovault_pipeline.core.lineage.requests import LineageStore, now
from repovault_pipeline.core.lineage.rows import Request
from repovault_pipeline.core.vault.lease import HELD, LeaseView, inspect, interrupt
from repovault_pipeline.core.vault.lfs import missing_detail
from repovault_pipeline.core.vault.outcome import LFS_MISSING, final_status
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest
from repovault_pipeline.core.vault.store import ObjectStore

log = logging.getLogger(__name__)

ENDED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
MAX_REPUBLISH = 3
BATCH = 500  # most rows of each kind looked at per pass


@dataclass
class ReconcileState:
    """The sensor cursor: how often, and when last, each pending request was republished."""

    republished: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> ReconcileState:
        doc = json.loads(raw) if raw else {}
        return cls(
            {
                request_id: (int(count), datetime.fromisoformat(at))
                for request_id, (count, at) in doc.get("republished", {}).items()
            }
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "republished": {
                    request_id: [count, at.isoformat()]
                    for request_id, (count, at) in sorted(self.republished.items())
                }
            }
        )


@dataclass
class ReconcileReport:
    closed: dict[str, str] = field(default_factory=dict)  # request_id -> status it ended with
    republished: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ended = ", ".join(
            f"{sum(1 for s in self.closed.values() if s == status)} {status}"
            for status in sorted(set(self.closed.values()))
        )
        return (
            f"closed {len(self.closed)} requests{f' ({ended})' if ended else ''}, "
            f"republished {len(self.republished)}, {len(self.errors)} could not be checked"
        )


@dataclass(frozen=True)
class Closing:
    """An `in_progress` request whose run has ended, and what it will be closed with."""

    row: Request
    run_id: str
    run_status: str | None  # None: the run no longer exists
    ending: Outcome
    how: str  # why, for the operator
    orphaned: LeaseView | None = None  # the run is alive to Dagster, dead to its lease


@dataclass
class ReconcilePlan:
    """What one pass found, before it writes anything: requests to close, stale `pending`
    requests to publish again or to fail, and the cursor after the pass."""

    closings: list[Closing] = field(default_factory=list)
    republish: list[tuple[Request, int]] = field(default_factory=list)  # and the time (1..3)
    give_up: list[tuple[Request, int]] = field(default_factory=list)  # and the times published
    state: ReconcileState = field(default_factory=ReconcileState)
    errors: list[str] = field(default_factory=list)

    def preview(self) -> str:
        """What applying it would do, for a dry run ("Test sensor")."""
        closing = ", ".join(
            f"{c.row.request_id} {c.ending.status}{' (orphaned run failed)' if c.orphaned else ''}"
            for c in self.closings
        )
        again = ", ".join(row.request_id for row, _ in self.republish)
        failing = ", ".join(row.request_id for row, _ in self.give_up)
        return (
            f"would close {len(self.closings)} requests{f' ({closing})' if closing else ''}, "
            f"republish {len(self.republish)}{f' ({again})' if again else ''} and fail "
            f"{len(self.give_up)}{f' ({failing})' if failing else ''} that never became a run; "
            f"{len(self.errors)} could not be checked"
        )


class Reconciler:
    def __init__(
        self,
        lineage: LineageStore,
        runs: RunHistory,
        store: ObjectStore,
        gateway: KafkaGateway,
        logger: logging.Logger | None = None,
    ) -> None:
        self.settings = gateway.settings
        self.lineage = lineage
        self.runs = runs
        self.store = store
        self.gateway = gateway
        self.log = logger or log
        self.requests = RequestLifecycle(lineage, gateway, self.settings.topics, logger=self.log)

    def run(self, state: ReconcileState) -> tuple[ReconcileReport, ReconcileState]:
        """One pass of the sensor's daemon tick: `plan`, then `apply`."""
        plan = self.plan(state)
        return self.apply(plan), plan.state

    def plan(self, state: ReconcileState) -> ReconcilePlan:
        """Look at the open requests, their runs and buckets; writes nothing."""
        plan = ReconcilePlan()
        for row in self.lineage.find(statuses=["in_progress"], limit=BATCH, oldest_first=True):
            try:
                if closing := self._closing(row):
                    plan.closings.append(closing)
            except Exception as exc:  # one unreadable bucket must not stop the others
                plan.errors.append(f"{row.request_id}: {exc}")
                self.log.warning(f"request {row.request_id} could not be reconciled: {exc}")
        self._plan_republish(state, plan)
        return plan

    def apply(self, plan: ReconcilePlan) -> ReconcileReport:
        """Close, republish and give up as planned; a row changed meanwhile (its run closed it)
        is left alone."""
        report = ReconcileReport(errors=list(plan.errors))
        for closing in plan.closings:
            try:
                self._close(closing, report)
            except Exception as exc:  # one row the database refuses must not stop the others
                report.errors.append(f"{closing.row.request_id}: {exc}")
                self.log.warning(f"request {closing.row.request_id} could not be closed: {exc}")
        for row, time_ in plan.republish:
            report.republished.append(row.request_id)
            self.log.warning(
                f"request {row.request_id} ({row.repo_id}) has been pending since "
                f"{row.creation_timestamp.isoformat()} with no run: published again to "
                f"{self.settings.topics.pending} (time {time_} of {MAX_REPUBLISH})"
            )
        self.requests.republish([row for row, _ in plan.republish])
        for row, count in plan.give_up:
            self._give_up(row, count, report)
        return report

    def _closing(self, row: Request) -> Closing | None:
        """How an `in_progress` row whose run has ended closes, with the run's outcome; None
        while its run goes on."""
        run_id = row.run_id
        if not run_id:
            return None
        status = self.runs.status(run_id)
        if status == "STARTED":
            return self._orphan(row, run_id)
        if status is not None and status not in ENDED:
            return None
        recorded = self.runs.recorded_outcome(run_id) if status is not None else None
        manifest = self._committed_manifest(row, recorded)
        snapshot_id = head_commit = error = None
        size: int | None = None
        reasons: dict[str, str] = dict(recorded.reasons) if recorded else {}
        if manifest is not None:
            outcome, how = "completed", f"snapshot {manifest.snapshot_id} is committed"
            snapshot_id, head_commit = manifest.snapshot_id, manifest.head_commit
            if recorded and recorded.snapshot_id == snapshot_id:
                size = recorded.bytes_uploaded
            held = manifest.lfs
            if held is not None and held.missing and LFS_MISSING not in reasons:
                reasons[LFS_MISSING] = missing_detail(held.missing, list(held.missing_paths))
        elif recorded is not None:
            outcome, how = recorded.outcome, "its upload_snapshot step recorded it"
            snapshot_id, head_commit = recorded.snapshot_id, recorded.head_commit
            size = recorded.bytes_uploaded
        else:
            outcome = "failed"
            reason = self.runs.failure_reason(run_id) if status is not None else None
            if status is None:
                error = f"run {run_id} no longer exists and recorded no outcome"
            elif reason:
                error = f"run {run_id} ended {status}: {reason}"
            else:
                error = f"run {run_id} ended {status} without recording its outcome"
            how = error
            reasons = {}
        ending = final_status(outcome, reasons)
        return Closing(
            row,
            run_id,
            status,
            Outcome(ending, snapshot_id, head_commit, size, error, reasons),
            how,
        )

    def _orphan(self, row: Request, run_id: str) -> Closing | None:
        """A started run whose lease, held by it, has gone REPOVAULT_ORPHAN_AFTER_TTLS TTLs
        without a renewal: closed `failed` with when its worker stopped. None: it lives, or
        holds no lease (then only run monitoring can tell)."""
        if not row.repo_id:
            return None
        bucket = bucket_name(row.repo_id, self.settings.bucket_prefix)
        lease = inspect(self.store, bucket)
        after = self.settings.orphan_after_ttls
        if (
            lease is None
            or lease.run_id != run_id
            or lease.state != HELD
            or lease.age_s <= after * lease.ttl_s
        ):
            return None
        error = (
            f"the worker of run {run_id} stopped renewing the lease of {bucket} at "
            f"{lease.renewed()} ({lease.age_s:.0f} s ago, {after} x its TTL of "
            f"{lease.ttl_s:.0f} s, REPOVAULT_ORPHAN_AFTER_TTLS): its process is gone; run "
            f"failed by reconcile_sensor, snapshot {lease.snapshot_id} was not committed"
        )
        failed = Outcome("failed", error=error)
        return Closing(row, run_id, "STARTED", failed, error, orphaned=lease)

    def _fail_orphan(self, closing: Closing) -> bool:
        """Take the orphan's lease from it, then fail its run; False when the lease was
        renewed meanwhile (the worker is alive after all: nothing is done)."""
        assert closing.orphaned is not None and closing.row.repo_id
        bucket = bucket_name(closing.row.repo_id, self.settings.bucket_prefix)
        try:
            interrupt(self.store, bucket, closing.orphaned, closing.how)
        except PreconditionFailed:
            self.log.info(f"run {closing.run_id} renewed its lease of {bucket}: not an orphan")
            return False
        self.runs.fail(closing.run_id, closing.how)
        return True

    def _close(self, closing: Closing, report: ReconcileReport) -> None:
        row, run_id = closing.row, closing.run_id
        if closing.orphaned is not None and not self._fail_orphan(closing):
            return
        status = closing.ending.status
        closed = self.requests.close(
            row.request_id,
            row.repo_id or "",
            run_id,
            closing.ending,
            only_status="in_progress",
            only_run_id=run_id,
        )
        if not closed:  # the run's own steps (or another pass) closed it meanwhile
            return
        report.closed[row.request_id] = status
        self.log.warning(
            f"request {row.request_id} ({row.repo_id}) was left in_progress by run {run_id} "
            f"({closing.run_status or 'gone'}): closed {status}; {closing.how}"
        )

    def _committed_manifest(
        self, row: Request, recorded: RecordedOutcome | None
    ) -> Manifest | None:
        """The manifest of a snapshot this request committed: the bucket's latest one, or the
        one the run recorded, when it carries the row's request id."""
        if not row.repo_id:
            return None
        reader = SnapshotReader(self.store, bucket_name(row.repo_id, self.settings.bucket_prefix))
        candidates = [reader.latest()]
        if recorded and recorded.snapshot_id:
            candidates.append(reader.manifest(recorded.snapshot_id))
        for manifest in candidates:
            if manifest and manifest.request_id == row.request_id:
                return manifest
        return None

    def _plan_republish(self, state: ReconcileState, plan: ReconcilePlan) -> None:
        """Which stale `pending` requests to publish again, and which were published too
        often; the cursor after that."""
        wait = timedelta(seconds=self.settings.republish_after_s)
        current = now()
        stale = self.lineage.find(
            statuses=["pending"], created_before=current - wait, limit=BATCH, oldest_first=True
        )
        kept: dict[str, tuple[int, datetime]] = {}
        for row in stale:
            if row.inyector_timestamp and current - row.inyector_timestamp < wait:
                continue  # read just now: its run is being requested
            if self.runs.runs_of_request(row.request_id):
                continue  # a run exists (queued, perhaps): the injector did its part
            count, last = state.republished.get(row.request_id, (0, row.creation_timestamp))
            if count and current - last < wait:
                kept[row.request_id] = (count, last)
            elif count >= MAX_REPUBLISH:
                plan.give_up.append((row, count))
            else:
                plan.republish.append((row, count + 1))
                kept[row.request_id] = (count + 1, current)
        plan.state = ReconcileState(kept)

    def _give_up(self, row: Request, count: int, report: ReconcileReport) -> None:
        error = (
            f"never became a run: published to {self.settings.topics.pending} again {count} "
            f"times, {self.settings.republish_after_s} s apart, and no run was requested; check "
            f"that kafka_injector_sensor is running and reads {self.settings.kafka_bootstrap}, "
            "then submit the repository again"
        )
        failed = Outcome("failed", error=error)
        if self.requests.close(
            row.request_id, row.repo_id or "", None, failed, only_status="pending"
        ):
            report.closed[row.request_id] = "failed"
            self.log.warning(f"request {row.request_id} ({row.repo_id}): {error}")
