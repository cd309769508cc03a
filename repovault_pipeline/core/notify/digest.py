"""What the fleet looks like now, read once for a tick or the daily summary: requests closed in
the last 24 hours by status, the stale repositories, the sources in error."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine

from repovault_pipeline.core.lineage.tables import repo_requests, repo_state
from repovault_pipeline.core.notify.events import Notification, notice, stale_since
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.fleet_rows import RepoState

DAY = timedelta(hours=24)
SUMMED = ("completed", "unchanged", "partial", "failed", "rejected")


def stale_repositories(engine: Engine, at: datetime, interval_h: int) -> list[RepoState]:
    """Repositories (not gone upstream) whose last check is older than the refresh interval
    and its grace (`events.stale_since`), least recently checked first."""
    checked = repo_state.c.last_checked_at
    query = (
        select(repo_state)
        .where(
            repo_state.c.upstream != "gone",
            or_(checked.is_(None), checked < stale_since(at, interval_h)),
        )
        .order_by(checked.asc().nulls_first(), repo_state.c.repo_id)
    )
    with engine.connect() as conn:
        return [RepoState(**row._mapping) for row in conn.execute(query)]


@dataclass(frozen=True)
class Digest:
    """The daily summary's figures."""

    at: datetime
    closed: dict[str, int]  # requests closed in the last 24 h, by final status
    stale: list[str]  # repo ids
    sources_in_error: list[str]  # source specs
    stored_bytes: int | None = None  # from the latest vault_stats, when there is one

    def notification(self) -> Notification:
        day = f"{self.at:%Y-%m-%d}"
        counts = ", ".join(f"{self.closed.get(s, 0)} {s}" for s in SUMMED)
        lines = [
            f"last 24 h: {counts}",
            _listed("stale repositories", self.stale),
            _listed("tracked sources in error", self.sources_in_error),
        ]
        if self.stored_bytes is not None:
            lines.append(f"vault size: {self.stored_bytes / 2**30:.2f} GiB")
        trouble = self.closed.get("failed", 0) + self.closed.get("partial", 0)
        verdict = "needs a look" if trouble or self.stale or self.sources_in_error else "all well"
        return notice("daily", f"daily:{day}", f"RepoVault daily summary {day}: {verdict}", lines)


def _listed(label: str, names: list[str], shown: int = 10) -> str:
    """`label: 3 (a, b, c)`, the first `shown` names."""
    more = ", ..." if len(names) > shown else ""
    return f"{label}: {len(names)}" + (f" ({', '.join(names[:shown])}{more})" if names else "")


def digest(
    engine: Engine, at: datetime, interval_h: int, stored_bytes: int | None = None
) -> Digest:
    finished = repo_requests.c.worker_finishing_timestamp
    query = (
        select(repo_requests.c.status, func.count())
        .where(finished > at - DAY, finished <= at)
        .group_by(repo_requests.c.status)
    )
    with engine.connect() as conn:
        closed = Counter({status: count for status, count in conn.execute(query)})
    sources = FleetStore(engine).sources()
    return Digest(
        at=at,
        closed=dict(closed),
        stale=[s.repo_id for s in stale_repositories(engine, at, interval_h)],
        sources_in_error=[s.source.spec for s in sources if s.status == "error"],
        stored_bytes=stored_bytes,
    )
