"""Lineage: the `repo_requests` table, one row per request, from submission to finish.

The seed system's column names are kept. PostgreSQL in every deployment; SQLite only for the
embedded default. Timestamps are timezone-aware UTC on both (SQLite stores naive UTC and is
given its zone back on read).

The schema is versioned with Alembic (schema.py, migrations/). `open_lineage` upgrades
the database to the code's head itself, one query when it already is there: the embedded default
and the tests start from nothing, and no process can work on an older schema. A database a newer
RepoVault migrated is refused, untouched. `repovault init` runs the same upgrade and says what it
did.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from repovault_pipeline.core.common.redact import mask_and_cut
from repovault_pipeline.core.common.settings import DB_TIMEOUT_S
from repovault_pipeline.core.lineage.database import lineage_engine
from repovault_pipeline.core.lineage.rows import (
    MAX_ERROR,
    Injected,
    Request,
    asked_columns,
    error_text,
    injected_row,
    reasons_json,
    refusal,
    request_row,
    storable,
)
from repovault_pipeline.core.lineage.schema import ensure
from repovault_pipeline.core.lineage.tables import repo_requests
from repovault_pipeline.core.vault.outcome import LFS_MISSING, WIKI_FAILED

FINAL_STATUSES = ("completed", "unchanged", "partial", "failed", "rejected")
STATUSES = ("pending", "in_progress", *FINAL_STATUSES)  # every status a request goes through
# Why a request is `partial`: its code snapshot is stored, a part it asked to keep is not.
METADATA_FAILED = "metadata_failed"
PARTIAL_REASONS = (LFS_MISSING, WIKI_FAILED, METADATA_FAILED)


def reasons_line(reasons: Mapping[str, str]) -> str:
    """The reasons of a `partial` request as one line for `error`: `lfs_missing: 2 ...; ...`."""
    return "; ".join(f"{name}: {detail}" for name, detail in sorted(reasons.items()))


def now() -> datetime:
    return datetime.now(UTC)


def new_request_id() -> str:
    return str(uuid.uuid4())


class LineageStore:
    """Reads and writes `repo_requests`; every text that could hold a secret is masked first."""

    def __init__(self, db_url: str, timeout_s: float = DB_TIMEOUT_S) -> None:
        """`timeout_s` (REPOVAULT_DB_TIMEOUT_S) bounds connecting, each statement, and the
        wait on a connection whose server went silent (see `connect_args`)."""
        self.engine: Engine = lineage_engine(db_url, timeout_s)

    def dispose(self) -> None:
        self.engine.dispose()

    def _upsert(
        self,
        rows: Sequence[dict[str, Any]],
        update_columns: Sequence[str],
        *,
        keep_first: Sequence[str] = (),
        only_status: str | None = None,
    ) -> None:
        """Insert each row, or update `update_columns` where its request_id exists: one request,
        one row, however often a tick or a message is replayed. One statement for the batch.
        Columns in `keep_first` keep a value already set; with `only_status`, an existing row
        is updated only while it has that status."""
        if not rows:
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(repo_requests)
        if update_columns:
            stmt = stmt.on_conflict_do_update(
                index_elements=["request_id"],
                set_={
                    col: func.coalesce(repo_requests.c[col], stmt.excluded[col])
                    if col in keep_first
                    else stmt.excluded[col]
                    for col in update_columns
                },
                where=repo_requests.c.status == only_status if only_status else None,
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["request_id"])
        with self.engine.begin() as conn:
            conn.execute(stmt, list(rows))

    def record_pending(
        self,
        repo_url: str,
        repo_id: str,
        source: str,
        request_id: str | None = None,
        created_at: datetime | None = None,
        keep: dict[str, bool] | None = None,
        force: bool = False,
    ) -> str:
        """A new request, before anyone acted on it, with what it asks for (`keep`, `force`:
        what a republished message must carry again); recording the same request_id twice is
        a no-op, so a replayed tick or message leaves one row."""
        request_id = request_id or new_request_id()
        row = request_row(request_id, repo_url, repo_id, source, "pending", created_at or now())
        self._upsert([{**row, **asked_columns(keep, force)}], ())
        return request_id

    def _upsert_each(
        self,
        requests: Sequence[Injected],
        row: Callable[[Injected], dict[str, Any]],
        update_columns: Sequence[str],
        **options: Any,
    ) -> dict[str, str]:
        """`_upsert` of the rows of `requests`, in one statement; when the database refuses the
        batch for what a row holds (a data exception or a constraint: SQLSTATE classes 22 and
        23, or a value the driver cannot send), each row alone. Returns the request ids the
        database refused, with its reason: a third party's message must never stop the rows of
        the others. Any other failure (unreachable, read-only, ...) raises."""
        try:
            self._upsert([row(r) for r in requests], update_columns, **options)
            return {}
        except (DataError, IntegrityError, StatementError, ValueError) as exc:
            if isinstance(exc, DBAPIError) and not isinstance(exc, DataError | IntegrityError):
                raise  # the database failed (down, read-only, ...), not the row: retry the tick
            if len(requests) == 1:
                return {requests[0].request_id: refusal(exc)}
        refused: dict[str, str] = {}
        for request in requests:
            refused.update(self._upsert_each([request], row, update_columns, **options))
        return refused

    def record_injected(self, requests: Sequence[Injected]) -> dict[str, str]:
        """The injector read these requests; rows are created for those a third party produced.
        Returns the requests the database refused (`_upsert_each`)."""
        return self._upsert_each(
            requests,
            lambda r: injected_row(r, "pending", **asked_columns(r.keep, r.force)),
            ("inyector_timestamp",),
            keep_first=("inyector_timestamp",),  # a replayed or republished message
        )

    def record_rejected(self, requests: Sequence[Injected]) -> dict[str, str]:
        """Requests that cannot be processed; the reason goes to `error`. Returns the requests
        the database refused (`_upsert_each`)."""
        return self._upsert_each(
            requests,
            lambda r: injected_row(r, "rejected", error=error_text(r.error)),
            ("status", "error", "inyector_timestamp"),
            only_status="pending",  # a bad message claiming a request id never closes its row
        )

    def record_started(
        self,
        request_id: str,
        repo_url: str,
        repo_id: str,
        source: str,
        run_id: str,
        created_at: datetime | None = None,
        started_at: datetime | None = None,
        keep_error: bool = False,
    ) -> None:
        """The run started (or restarted) the request. A retried step passes `keep_error`, so
        the row keeps saying why the previous attempt failed while this one runs."""
        started_at = started_at or now()
        created_at = min(created_at or started_at, started_at)
        self._upsert(
            [
                request_row(
                    request_id,
                    repo_url,
                    repo_id,
                    source,
                    "in_progress",
                    created_at,
                    run_id=run_id,
                    worker_start_timestamp=started_at,
                )
            ],
            ("status", "run_id", "worker_start_timestamp", "worker_finishing_timestamp")
            + (() if keep_error else ("error",)),
            keep_first=("worker_start_timestamp",),  # retries and re-executions start later
        )

    def record_retrying(self, request_id: str, attempt: int, attempts: int, reason: str) -> None:
        """Attempt `attempt` of `attempts` failed for a transient reason and will be retried: the
        row stays `in_progress` and says why, instead of looking busy with no error for the
        minutes the retries take. `record_finished` replaces the text at the end."""
        note = storable(
            mask_and_cut(f"attempt {attempt} of {attempts} failed: {reason}", MAX_ERROR - 10)
        )
        with self.engine.begin() as conn:
            conn.execute(
                update(repo_requests)
                .where(repo_requests.c.request_id == request_id)
                .where(repo_requests.c.status == "in_progress")
                .values(error=f"{note}; retrying")
            )

    def record_finished(
        self,
        request_id: str,
        status: str,
        *,
        snapshot_id: str | None = None,
        head_commit: str | None = None,
        bytes_uploaded: int | None = None,
        error: str | None = None,
        reasons: Mapping[str, str] | None = None,
        finished_at: datetime | None = None,
        only_status: str | None = None,
        only_run_id: str | None = None,
    ) -> bool:
        """Close the request. With `only_status` / `only_run_id` (what reconcile saw), a row that
        changed meanwhile is left alone; returns whether the row was closed. `reasons` (of a
        `partial` request) also go to `error` as one line, where people and tools look."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"{status!r} is not a final status ({', '.join(FINAL_STATUSES)})")
        if (status == "partial") != bool(reasons):
            raise ValueError("a request is `partial` exactly when it has reasons")
        if reasons:
            error = reasons_line(reasons)
        stmt = update(repo_requests).where(repo_requests.c.request_id == request_id)
        if only_status is not None:
            stmt = stmt.where(repo_requests.c.status == only_status)
        if only_run_id is not None:
            stmt = stmt.where(repo_requests.c.run_id == only_run_id)
        with self.engine.begin() as conn:
            closed = conn.execute(
                stmt.values(
                    status=status,
                    snapshot_id=snapshot_id,
                    head_commit=head_commit,
                    bytes_uploaded=bytes_uploaded,
                    error=error_text(error),
                    reasons=reasons_json(reasons),
                    worker_finishing_timestamp=finished_at or now(),
                )
            )
        return closed.rowcount == 1

    def record_part_failed(self, request_id: str, reason: str, detail: str) -> Request | None:
        """A part of the request failed after its row was closed (the forge metadata runs after
        `record_lineage`): a `completed`, `unchanged` or `partial` row becomes `partial` with
        `reason` added. Returns the row as it is now; None when the request has no finished row
        (a failed row stays failed: its run failed before this part)."""
        c = repo_requests.c
        with self.engine.begin() as conn:
            row = conn.execute(
                select(repo_requests)
                .where(c.request_id == request_id)
                .where(c.status.in_(("completed", "unchanged", "partial")))
                .with_for_update()
            ).one_or_none()
            if row is None:
                return None
            found = Request.from_row(row._mapping)
            reasons = {**(found.reasons or {}), reason: storable(mask_and_cut(detail, MAX_ERROR))}
            conn.execute(
                update(repo_requests)
                .where(c.request_id == request_id)
                .values(
                    status="partial",
                    reasons=reasons_json(reasons),
                    error=error_text(reasons_line(reasons)),
                )
            )
        return self.get(request_id)

    def get(self, request_id: str) -> Request | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(repo_requests).where(repo_requests.c.request_id == request_id)
            ).one_or_none()
        return Request.from_row(row._mapping) if row else None

    def find(
        self,
        repo_id: str | None = None,
        request_id: str | None = None,
        limit: int = 100,
        statuses: Sequence[str] | None = None,
        created_before: datetime | None = None,
        oldest_first: bool = False,
        offset: int = 0,
    ) -> list[Request]:
        """Newest first (or oldest first); filtered by repository, request, status or age;
        `offset` rows skipped (pages)."""
        created = repo_requests.c.creation_timestamp
        order = (created, repo_requests.c.request_id)
        query = select(repo_requests).order_by(
            *(order if oldest_first else (c.desc() for c in order))
        )
        query = query.limit(limit).offset(offset)
        if created_before is not None:
            query = query.where(created < created_before)
        if repo_id is not None or request_id is not None:
            query = query.where(
                or_(repo_requests.c.repo_id == repo_id, repo_requests.c.request_id == request_id)
            )
        if statuses:
            query = query.where(repo_requests.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            return [Request.from_row(row._mapping) for row in conn.execute(query)]

    def forget(self, repo_id: str) -> int:
        """Delete every request of `repo_id` (`repovault forget`); returns how many."""
        with self.engine.begin() as conn:
            done = conn.execute(delete(repo_requests).where(repo_requests.c.repo_id == repo_id))
        return int(done.rowcount)

    def last_url(self, repo_id: str) -> str | None:
        """The URL last requested for `repo_id`: what a run without a request clones."""
        query = (
            select(repo_requests.c.repo_url)
            .where(repo_requests.c.repo_id == repo_id)
            .where(repo_requests.c.status != "rejected")
            .order_by(repo_requests.c.creation_timestamp.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()


def open_lineage(db_url: str, timeout_s: float = DB_TIMEOUT_S) -> LineageStore:
    """A store on `db_url`, its schema at the code's head: one query when it already is, else
    upgraded (`schema.ensure`); a database a newer RepoVault migrated is refused."""
    store = LineageStore(db_url, timeout_s)
    try:
        ensure(store.engine)
    except BaseException:
        store.dispose()
        raise
    return store
