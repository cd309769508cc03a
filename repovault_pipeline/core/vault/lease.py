"""The writer's lease: one object per bucket, `lease.json`, that makes the bucket itself safe
against two runs writing one repository at once (a second deployment, an in-process execution,
a run that outlived its worker's heartbeat).

Taken with S3 conditional writes: `If-None-Match: *` creates it, `If-Match: <etag>` renews it,
takes over an expired one, and releases it. Every renewal changes its etag, so a writer whose
renewal is refused (412) knows another run took the bucket and stops before its manifest.
Expiry is judged on the store's clock (the lease's age as the server reports it), never on the
writers' clocks, so skewed hosts agree. A lease is taken over only after it expired, that is
after its holder missed renewals for `ttl_s`; a released lease is free at once. The holder
counts its lease from when it sent the renewal the store accepted (the store dates the write
after that), so it stops trusting the lease before the store lets anyone take it over, however
late the renewal's answer came.

A run released as `free` left `tree/` equal to the latest snapshot's HEAD. A run that failed
releases it as `interrupted`; one that was killed leaves it `held` until it expires. Both mean
`tree/` may hold files of a snapshot that was never committed, so the next run rewrites it even
when the remote did not change (`repair`). A lease taken from a holder that did not release it
says so in `previous` until the next writer takes it: that holder may have been paused, not
dead, and uploads it had in flight may still land (every run compares `tree/` with the latest
`tree.json`, tree_sync.py).

The lease names the Dagster run that holds it (`run_id`): a retry of that run's step takes its
own lease back at once instead of waiting for it to expire, and `reconcile_sensor` fails a
started run whose lease it holds has not been renewed for REPOVAULT_ORPHAN_AFTER_TTLS TTLs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from repovault_pipeline.core.common.errors import ArchiveError, PreconditionFailed, TransientError
from repovault_pipeline.core.vault.records import LeaseHolder, LeaseRecord
from repovault_pipeline.core.vault.store import ObjectStore

log = logging.getLogger(__name__)

LEASE_KEY = "lease.json"
HELD, FREE, INTERRUPTED = "held", "free", "interrupted"


@dataclass(frozen=True)
class LeaseView:
    """What `lease.json` says now: who holds the bucket, for which snapshot, and whether that
    holder is still alive (renewed within its TTL)."""

    state: str
    snapshot_id: str | None
    owner: str | None
    age_s: float
    ttl_s: float
    etag: str
    run_id: str | None = None  # the Dagster run holding it (None: the CLI, a script)
    renewed_at: float = 0.0  # when it was last written, by the store's clock (epoch seconds)
    record: LeaseRecord = field(default_factory=LeaseRecord)  # what lease.json holds

    @property
    def live(self) -> bool:
        return self.state == HELD and self.age_s <= self.ttl_s

    @property
    def abandoned(self) -> bool:
        """Held by a run that stopped renewing without releasing it: it died mid-write."""
        return self.state == HELD and not self.live

    @property
    def needs_repair(self) -> bool:
        """The last writer did not finish: `tree/` may hold files of an uncommitted snapshot."""
        return self.state == INTERRUPTED or self.abandoned

    @property
    def quiet(self) -> bool:
        """Released by a writer that finished and took over from no live-looking holder: no
        other writer's upload can still land in `tree/`, so the latest `tree.json` says what
        `tree/` holds (unless edited by hand, which the `restorable` check finds)."""
        previous = self.record.previous
        return self.state == FREE and (previous is None or not previous.taken_over)

    def renewed(self) -> str:
        """When its holder last renewed it, for people (UTC, the store's clock)."""
        return datetime.fromtimestamp(self.renewed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def summary(self) -> LeaseHolder:
        """What the next holder records of this one in `previous`."""
        return LeaseHolder(
            state=self.state,
            owner=self.owner,
            run_id=self.run_id,
            snapshot_id=self.snapshot_id,
            renewed_at=datetime.fromtimestamp(self.renewed_at, UTC).isoformat(),
            # It stopped renewing without releasing: paused or dead, its uploads in flight may
            # still land after this.
            taken_over=self.state == HELD,
        )


def inspect(store: ObjectStore, bucket: str) -> LeaseView | None:
    found = store.read(bucket, LEASE_KEY)
    if found is None:
        return None
    try:
        record = LeaseRecord.model_validate_json(found.data)
    except ValidationError:
        record = LeaseRecord()  # unreadable: treat as expired, so it can be taken over
    return LeaseView(
        state=record.state,
        snapshot_id=record.snapshot_id,
        owner=record.owner,
        age_s=found.age_s,
        ttl_s=record.ttl_s,
        etag=found.etag,
        run_id=record.run_id,
        renewed_at=found.modified,
        record=record,
    )


def interrupt(store: ObjectStore, bucket: str, view: LeaseView, reason: str) -> None:
    """Mark a lease whose holder is gone `interrupted`, conditionally on the etag `view` read:
    PreconditionFailed when it was renewed meanwhile (the holder is alive after all). A holder
    that was only cut off finds its lease lost at its next renewal and writes nothing more;
    the next run repairs `tree/`."""
    record = view.record.model_copy(update={"state": INTERRUPTED, "interrupted": reason})
    store.put_bytes(
        bucket,
        LEASE_KEY,
        _lease_bytes(record),
        content_type="application/json",
        if_match=view.etag,
    )


class Lease:
    """A held lease, renewed by a background thread until `release`.

    `check()` raises as soon as the lease is lost or cannot be vouched for; `confirm()` renews
    synchronously, right before a write that must not happen without the lease (the manifest,
    `latest.json`, retention).
    """

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        snapshot_id: str,
        ttl_s: float,
        logger: logging.Logger | None = None,
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.snapshot_id = snapshot_id
        self.ttl_s = ttl_s
        self.run_id = run_id
        self.owner = uuid.uuid4().hex
        self.previous: LeaseHolder | None = None  # the holder before, unreleased
        self.quiet = False  # the lease it took was quiet (`LeaseView.quiet`) or absent
        self.log = logger or log
        self.etag: str | None = None
        self.lost = False
        # Set when the previous writer did not finish; cleared by the writer once it committed.
        self.repair = False
        self.renewals = 0
        # Monotonic time the last renewal the store accepted was sent at.
        self._renewed_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(
        cls,
        store: ObjectStore,
        bucket: str,
        snapshot_id: str,
        ttl_s: float,
        wait_s: float,
        logger: logging.Logger | None = None,
        run_id: str | None = None,
    ) -> Lease:
        """Take the bucket's lease, waiting up to `wait_s` for a live holder to finish or
        expire; then raise TransientError, so the run is retried later. A lease held by this
        same run (`run_id`: an earlier attempt of its step that could not release it) is
        taken back at once."""
        lease = cls(store, bucket, snapshot_id, ttl_s, logger, run_id)
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            current = inspect(store, bucket)
            own = current is not None and run_id is not None and current.run_id == run_id
            if current is None or not current.live or own:
                if lease._take(current, own):
                    return lease
                continue  # another run took it between our read and write: look again
            if not waited:
                waited = True
                lease.log.info(
                    "waiting for the lease of %s: another run is writing snapshot %s",
                    bucket,
                    current.snapshot_id,
                )
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"another run is writing {bucket} (snapshot {current.snapshot_id}, lease "
                    f"renewed {current.age_s:.0f} s ago); waited {wait_s:.0f} s "
                    "(REPOVAULT_LEASE_WAIT_S), retry later"
                )
            time.sleep(min(ttl_s / 4, 1.0, max(deadline - time.monotonic(), 0.05)))

    def _take(self, current: LeaseView | None, own: bool) -> bool:
        """Write this lease over `current` (none, free, expired, or this run's own) and start
        renewing it; False when another writer changed it since it was read."""
        unreleased = current is not None and current.state == HELD
        self.previous = current.summary() if current and current.state != FREE else None
        try:
            self._write(HELD, if_match=current.etag if current else None)
        except PreconditionFailed:
            return False
        if current is not None and own and unreleased:
            self.log.warning(
                "took back the lease of %s from an earlier attempt of run %s "
                "(snapshot %s), which did not release it",
                self.bucket,
                self.run_id,
                current.snapshot_id,
            )
        elif current is not None and current.abandoned:
            self.log.warning(
                "took over the lease of %s: its holder (snapshot %s) stopped renewing "
                "it %.0f s ago and never released it",
                self.bucket,
                current.snapshot_id,
                current.age_s,
            )
        self.repair = current is not None and (current.needs_repair or unreleased)
        self.quiet = current is None or current.quiet
        self._start()
        return True

    def _doc(self, state: str) -> bytes:
        record = LeaseRecord(
            state=state,
            owner=self.owner,
            run_id=self.run_id,
            snapshot_id=self.snapshot_id,
            ttl_s=self.ttl_s,
            renewals=self.renewals,
            host=socket.gethostname(),
            pid=os.getpid(),
            written_at=datetime.now(UTC).isoformat(),
            previous=self.previous,
        )
        return _lease_bytes(record)

    def _write(self, state: str, if_match: str | None) -> None:
        """Conditional write of the lease; the caller holds `_lock` or is the only thread.
        It holds from when the request was sent, not from when its answer came: an answer can
        come late (a frozen process, a stalled link) while the store's clock already counts."""
        sent = time.monotonic()
        self.etag = self.store.put_bytes(
            self.bucket,
            LEASE_KEY,
            self._doc(state),
            content_type="application/json",
            if_match=if_match,
            if_none_match=if_match is None,
        )
        self._renewed_at = sent

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease-{self.bucket}", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except PreconditionFailed:
                return
            except ArchiveError as exc:  # the store hiccupped: `check` fails if it lasts a TTL
                self.log.warning("lease of %s not renewed, will retry: %s", self.bucket, exc)

    def renew(self) -> None:
        """Renew now; a refused renewal means another run took the bucket: the lease is lost."""
        with self._lock:
            if self.lost:
                raise PreconditionFailed(f"the lease of {self.bucket} was lost")
            self.renewals += 1
            try:
                self._write(HELD, if_match=self.etag)
            except PreconditionFailed:
                self.lost = True
                self.log.error(
                    "lost the lease of %s to another run; snapshot %s will not be committed",
                    self.bucket,
                    self.snapshot_id,
                )
                raise

    def check(self) -> None:
        """Raise unless this run still holds the lease, as far as it can tell without a request."""
        if self.lost:
            raise TransientError(
                f"another run took over {self.bucket} while snapshot {self.snapshot_id} was "
                "being written; it was not committed"
            )
        if time.monotonic() - self._renewed_at > self.ttl_s:
            raise TransientError(
                f"the lease of {self.bucket} could not be renewed for {self.ttl_s:.0f} s "
                f"(REPOVAULT_LEASE_TTL_S); snapshot {self.snapshot_id} was not committed"
            )

    def confirm(self) -> None:
        """Renew synchronously before a write only the holder may do."""
        self.check()
        try:
            self.renew()
        except PreconditionFailed:
            self.check()  # raises: lost

    def release(self, finished: bool = True) -> None:
        """Stop renewing and hand the bucket back at once: `free` when this run finished with
        `tree/` consistent, else `interrupted`, so that the next run repairs `tree/`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        state = FREE if finished and not self.repair else INTERRUPTED
        try:
            with self._lock:
                if self.lost:
                    return
                self._write(state, if_match=self.etag)
        except ArchiveError as exc:
            self.log.warning("lease of %s not released (it will expire): %s", self.bucket, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.release(finished=exc_type is None)


def _lease_bytes(record: LeaseRecord) -> bytes:
    """`lease.json` as written: the fields set, in the model's order, indented by one."""
    return json.dumps(record.model_dump(mode="json", exclude_unset=True), indent=1).encode()
