"""Checks asked for over the HTTP API (`POST /api/repositories/{repo_id}/verify`): the table
`repo_verifications`, one row per check from `queued` to its verdict.

The API only writes a `queued` row: the check itself (minutes of git and gigabytes of disk on a
large repository) runs where every run runs, as a Dagster run of the `restorable` asset check,
which `verify_sensor` requests on a daemon tick (`running`). The check writes its verdict into
the row (`passed` or `failed`); a run that ended without one closes it as `error` with the
reason. While a check of a target (a repository, a snapshot of it or its latest) is open, asking
again gives that check: `open_key` is unique, so concurrent asks cannot start two.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from repovault_pipeline.core.common.redact import mask_and_cut
from repovault_pipeline.core.lineage.requests import now
from repovault_pipeline.core.lineage.rows import MAX_ERROR, storable
from repovault_pipeline.core.lineage.tables import repo_verifications

OPEN = ("queued", "running")
ENDED = ("passed", "failed", "error")


@dataclass(frozen=True)
class Verification:
    verify_id: str
    repo_id: str
    snapshot_id: str | None
    status: str
    requested_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_id: str | None = None
    verdict: dict[str, Any] | None = None
    error: str | None = None


def _open_key(repo_id: str, snapshot_id: str | None) -> str:
    return f"{repo_id}@{snapshot_id or 'latest'}"


class VerifyQueue:
    """Reads and writes `repo_verifications` on the lineage database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ask(
        self, repo_id: str, snapshot_id: str | None, requested_by: str
    ) -> tuple[Verification, bool]:
        """A new `queued` check of the target, or the open one already asked for; True when new."""
        key = _open_key(repo_id, snapshot_id)
        while True:
            if found := self._find(repo_verifications.c.open_key == key):
                return found[0], False
            row = Verification(
                str(uuid.uuid4()), repo_id, snapshot_id, "queued", requested_by, now()
            )
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(repo_verifications).values(
                            **{k: v for k, v in vars(row).items() if k != "verdict"}, open_key=key
                        )
                    )
                return row, True
            except IntegrityError:  # another ask of the same target won: give its check
                continue

    def get(self, verify_id: str) -> Verification | None:
        found = self._find(repo_verifications.c.verify_id == verify_id)
        return found[0] if found else None

    def with_status(self, status: str) -> list[Verification]:
        return self._find(repo_verifications.c.status == status)

    def started(self, verify_ids: Sequence[str]) -> None:
        """Their runs are requested."""
        self._update(verify_ids, ("queued",), status="running", started_at=now())

    def ran_in(self, verify_id: str, run_id: str) -> None:
        """The check is executing in run `run_id`."""
        self._update([verify_id], OPEN, status="running", run_id=run_id)

    def finish(self, verify_id: str, verdict: dict[str, Any]) -> None:
        """The check's verdict (`core.verify.Verdict.to_dict`, with `summary`)."""
        self._update(
            [verify_id],
            OPEN,
            status="passed" if verdict.get("ok") else "failed",
            verdict=json.dumps(verdict, sort_keys=True),
            finished_at=now(),
            open_key=None,
        )

    def fail(self, verify_id: str, reason: str) -> None:
        """The check ended without a verdict (its run failed, was canceled, never started)."""
        self._update(
            [verify_id],
            OPEN,
            status="error",
            error=storable(mask_and_cut(reason, MAX_ERROR)),
            finished_at=now(),
            open_key=None,
        )

    def _update(self, verify_ids: Sequence[str], only: Sequence[str], **values: Any) -> None:
        c = repo_verifications.c
        with self.engine.begin() as conn:
            conn.execute(
                update(repo_verifications)
                .where(c.verify_id.in_(list(verify_ids)), c.status.in_(list(only)))
                .values(**values)
            )

    def _find(self, where: Any) -> list[Verification]:
        columns = [repo_verifications.c[name] for name in Verification.__dataclass_fields__]
        query = select(*columns).where(where).order_by(repo_verifications.c.created_at)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return [
            Verification(**{**r, "verdict": json.loads(r["verdict"]) if r["verdict"] else None})
            for r in rows
        ]
