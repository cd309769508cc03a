"""The fleet's records: tracked sources (`repo_sources`) and what upstream looked like when
each known repository was last checked (`repo_state`).

Plain SQLAlchemy on the lineage database (PostgreSQL; SQLite for the embedded default). A
repository row is never deleted but by an operator (`repovault forget`): a repository that
vanishes upstream is marked `gone`, a removed source keeps its repositories and their snapshots.
The rows as read back are in fleet_rows.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.lineage.tables import repo_sources, repo_state
from repovault_pipeline.core.sources.fleet_rows import (
    RepoState,
    SourceRow,
    source_row,
    unreachable_when,
    with_counts,
)
from repovault_pipeline.core.sources.forges.listing import Source

MAX_ERROR = 2000


class FleetStore:
    """Reads and writes `repo_sources` and `repo_state` on the lineage database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, table):
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------------ sources

    def add_source(self, source: Source, at: datetime, keep: dict[str, bool] | None = None) -> None:
        """Track `source`; tracking it again replaces its filters and its `keep` (what runs of
        its repositories keep beside the history) and resumes a removed one, due for listing at
        once like a new one (`repovault track add` asks for `--replace` before changing a
        tracked source's choices)."""
        filters = source.filters
        row = {
            "source_id": source.source_id,
            "kind": source.kind,
            "name": source.name,
            "host": source.host,
            "skip_forks": filters.skip_forks,
            "skip_archived": filters.skip_archived,
            "include": ",".join(filters.include) or None,
            "exclude": ",".join(filters.exclude) or None,
            "keep": json.dumps(keep, sort_keys=True) if keep else None,
            "added_at": at,
            "status": "active",
            "error": None,
        }
        stmt = self._insert(repo_sources)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source_id"],
            set_={
                k: stmt.excluded[k]
                for k in ("skip_forks", "skip_archived", "include", "exclude", "keep", "status")
            }
            | {"last_listed_at": None},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [row])

    def remove_source(self, source_id: str) -> bool:
        """Stop listing the source; its repositories stay in the vault and keep being refreshed."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(repo_sources)
                .where(repo_sources.c.source_id == source_id)
                .where(repo_sources.c.status != "removed")
                .values(status="removed")
            )
        return done.rowcount == 1

    def source(self, source_id: str) -> SourceRow | None:
        """One source as recorded, tracked or removed; None when it never was."""
        query = with_counts().where(repo_sources.c.source_id == source_id)
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return source_row(found._mapping) if found is not None else None

    def sources(self, due_before: datetime | None = None) -> list[SourceRow]:
        """Tracked sources (not removed) with their repository counts; with `due_before`, only
        those never listed or last listed before it."""
        query = (
            with_counts()
            .where(repo_sources.c.status != "removed")
            .order_by(repo_sources.c.source_id)
        )
        if due_before is not None:
            query = query.where(
                or_(
                    repo_sources.c.last_listed_at.is_(None),
                    repo_sources.c.last_listed_at < due_before,
                )
            )
        with self.engine.connect() as conn:
            return [source_row(row._mapping) for row in conn.execute(query)]

    def record_listing(
        self, source_id: str, at: datetime, complete: bool, error: str | None
    ) -> None:
        """When the source was listed and how it went (an incomplete listing keeps its error)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(repo_sources)
                .where(repo_sources.c.source_id == source_id)
                .values(
                    last_listed_at=at,
                    status="active" if complete else "error",
                    error=_error(error),
                )
            )

    # ------------------------------------------------------------------ repositories

    def add_repos(
        self, source_id: str, repos: Iterable[tuple[str, str]], at: datetime
    ) -> list[str]:
        """Record the listed repositories (repo_id, clone URL) that are new; returns their ids.
        They count as checked now: their first archive run is what looks at them next."""
        rows = [
            {
                "repo_id": repo_id,
                "repo_url": mask_secrets(url),
                "source_id": source_id,
                "last_checked_at": at,
                "upstream": "active",
                "consecutive_failures": 0,
            }
            for repo_id, url in repos
        ]
        if not rows:
            return []
        stmt = self._insert(repo_state).on_conflict_do_nothing(index_elements=["repo_id"])
        with self.engine.begin() as conn:
            known = set(
                conn.execute(
                    select(repo_state.c.repo_id).where(
                        repo_state.c.repo_id.in_([r["repo_id"] for r in rows])
                    )
                ).scalars()
            )
            new = [r for r in rows if r["repo_id"] not in known]
            if new:
                conn.execute(stmt, new)
            # A repository archived before its source was tracked now belongs to the source.
            conn.execute(
                update(repo_state)
                .where(repo_state.c.repo_id.in_(sorted(known)))
                .where(repo_state.c.source_id.is_(None))
                .values(source_id=source_id)
            )
        return [str(r["repo_id"]) for r in new]

    def record_stamps(self, stamps: dict[str, str]) -> None:
        """The forge's activity stamp of each listed repository (repo_id -> stamp), which
        refresh compares with `metadata_stamp`."""
        if not stamps:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(repo_state)
                .where(repo_state.c.repo_id == bindparam("listed_id"))
                .values(forge_stamp=bindparam("stamp")),
                [{"listed_id": r, "stamp": s} for r, s in sorted(stamps.items())],
            )

    def record_snapshot(
        self,
        repo_id: str,
        repo_url: str,
        digest: str,
        snapshot_id: str | None,
        at: datetime,
        wiki_digest: str | None = None,
    ) -> None:
        """After a committed (or confirmed unchanged) snapshot: the refs it holds, and its
        wiki's when the run kept the wiki (else the wiki snapshot recorded before stays), for
        refresh."""
        row = {
            "repo_id": repo_id,
            "repo_url": mask_secrets(repo_url),
            "source_id": None,
            "last_checked_at": at,
            "refs_digest": digest,
            "wiki_digest": wiki_digest,
            "upstream": "active",
            "consecutive_failures": 0,
            "last_snapshot_id": snapshot_id,
        }
        stmt = self._insert(repo_state)
        stmt = stmt.on_conflict_do_update(
            index_elements=["repo_id"],
            set_={
                k: stmt.excluded[k]
                for k in (
                    "repo_url",
                    "last_checked_at",
                    "refs_digest",
                    "upstream",
                    "consecutive_failures",
                    "last_snapshot_id",
                )
            }
            | {"wiki_digest": func.coalesce(stmt.excluded.wiki_digest, repo_state.c.wiki_digest)},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [row])

    def record_metadata(self, repo_id: str, stamp: str) -> None:
        """After a metadata snapshot: the `forge_stamp` read before it, which it is at least as
        new as (a change listed meanwhile differs, and is fetched by the next run)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(repo_state)
                .where(repo_state.c.repo_id == repo_id)
                .values(metadata_stamp=stamp)
            )

    def due(self, checked_before: datetime, limit: int) -> list[RepoState]:
        """Repositories not checked since `checked_before`, least recently checked first."""
        query = (
            select(repo_state)
            .where(
                or_(
                    repo_state.c.last_checked_at.is_(None),
                    repo_state.c.last_checked_at < checked_before,
                )
            )
            .order_by(repo_state.c.last_checked_at.asc().nulls_first(), repo_state.c.repo_id)
            .limit(limit)
        )
        return self._states(query)

    def get(self, repo_ids: Sequence[str]) -> list[RepoState]:
        return self._states(
            select(repo_state).where(repo_state.c.repo_id.in_(list(repo_ids))).order_by("repo_id")
        )

    def forget(self, repo_id: str) -> RepoState | None:
        """Delete the repository's row (`repovault forget`, the one exception to "never
        deleted"); returns what it was, None when there was none."""
        found = self.get([repo_id])
        if found:
            with self.engine.begin() as conn:
                conn.execute(delete(repo_state).where(repo_state.c.repo_id == repo_id))
        return found[0] if found else None

    def of_source(self, source_id: str) -> list[RepoState]:
        return self._states(select(repo_state).where(repo_state.c.source_id == source_id))

    def keeps(self) -> dict[str, dict[str, bool]]:
        """Each source's `keep`, for the runs of its repositories (first runs and refreshes)."""
        query = select(repo_sources.c.source_id, repo_sources.c.keep).where(
            repo_sources.c.keep.is_not(None)
        )
        with self.engine.connect() as conn:
            return {row.source_id: json.loads(row.keep) for row in conn.execute(query)}

    def never_archived(self, after: str, limit: int) -> list[RepoState]:
        """Tracked repositories without a snapshot, by repo_id after `after`: the sources
        sensor's cursor walks them in batches."""
        query = (
            select(repo_state)
            .where(
                and_(
                    repo_state.c.source_id.is_not(None),
                    repo_state.c.last_snapshot_id.is_(None),
                    repo_state.c.upstream == "active",
                    repo_state.c.repo_id > after,
                )
            )
            .order_by(repo_state.c.repo_id)
            .limit(limit)
        )
        return self._states(query)

    def record_checks(
        self,
        at: datetime,
        unchanged: Sequence[str] = (),
        changed: Sequence[str] = (),
        failed: Sequence[str] = (),
        gone: Sequence[str] = (),
    ) -> None:
        """One tick's outcome: every checked repository gets `last_checked_at`; changed ones
        `last_changed_at`; failures count towards `unreachable`; `gone` is marked."""
        table = repo_state.c
        with self.engine.begin() as conn:
            if ok := [*unchanged, *changed]:
                conn.execute(
                    update(repo_state)
                    .where(table.repo_id.in_(ok))
                    .values(last_checked_at=at, upstream="active", consecutive_failures=0)
                )
            if changed:
                conn.execute(
                    update(repo_state)
                    .where(table.repo_id.in_(list(changed)))
                    .values(last_changed_at=at)
                )
            if failed:
                failures = table.consecutive_failures + 1
                conn.execute(
                    update(repo_state)
                    .where(table.repo_id.in_(list(failed)))
                    .values(
                        last_checked_at=at,
                        consecutive_failures=failures,
                        upstream=unreachable_when(failures),
                    )
                )
            if gone:
                conn.execute(
                    update(repo_state)
                    .where(table.repo_id.in_(list(gone)))
                    .values(last_checked_at=at, upstream="gone")
                )

    def _states(self, query) -> list[RepoState]:
        with self.engine.connect() as conn:
            return [RepoState(**row._mapping) for row in conn.execute(query)]


def _error(error: str | None) -> str | None:
    return mask_secrets(error)[:MAX_ERROR] if error else None


def due_before(now: datetime, interval_h: int) -> datetime:
    return now - timedelta(hours=interval_h)
