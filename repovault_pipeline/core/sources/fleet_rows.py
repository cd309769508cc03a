"""The fleet's rows as they are read back: a tracked source (`SourceRow`, with how many
repositories it listed) and what upstream looked like when a repository was last checked
(`RepoState`), and the expressions `FleetStore` shapes them with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, RowMapping, Select, case, func, select

from repovault_pipeline.core.lineage.tables import repo_sources, repo_state
from repovault_pipeline.core.sources.forges.listing import Filters, Source

UNREACHABLE_AFTER = 3  # consecutive failed checks before a repository is `unreachable`


@dataclass(frozen=True)
class SourceRow:
    """A `repo_sources` row: the source, when it was last listed and how that went."""

    source: Source
    added_at: datetime
    last_listed_at: datetime | None
    status: str
    error: str | None
    repos: int = 0
    keep: dict[str, bool] | None = None


@dataclass(frozen=True)
class RepoState:
    """A `repo_state` row: what refresh compares upstream with, and how it went last."""

    repo_id: str
    repo_url: str
    source_id: str | None
    last_checked_at: datetime | None
    last_changed_at: datetime | None
    refs_digest: str | None
    upstream: str
    consecutive_failures: int
    last_snapshot_id: str | None
    wiki_digest: str | None = None  # None: no wiki snapshot recorded yet
    forge_stamp: str | None = None  # None: never listed by a source (or the forge gave none)
    metadata_stamp: str | None = None  # None: no metadata snapshot recorded yet


def unreachable_when(failures: ColumnElement[int]) -> ColumnElement[str]:
    """`unreachable` from the UNREACHABLE_AFTER-th failure in a row; `gone` stays `gone`."""
    return case(
        (failures >= UNREACHABLE_AFTER, "unreachable"),
        (repo_state.c.upstream == "gone", "gone"),
        else_="active",
    )


def with_counts() -> Select:
    """`repo_sources` rows with `repos`, how many known repositories each source listed."""
    counts = (
        select(repo_state.c.source_id, func.count().label("n"))
        .group_by(repo_state.c.source_id)
        .subquery()
    )
    return select(repo_sources, func.coalesce(counts.c.n, 0).label("repos")).outerjoin(
        counts, counts.c.source_id == repo_sources.c.source_id
    )


def source_row(row: RowMapping) -> SourceRow:
    filters = Filters(
        skip_forks=bool(row["skip_forks"]),
        skip_archived=bool(row["skip_archived"]),
        include=tuple(p for p in (row["include"] or "").split(",") if p),
        exclude=tuple(p for p in (row["exclude"] or "").split(",") if p),
    )
    return SourceRow(
        source=Source(row["kind"], row["name"], row["host"], filters),
        added_at=row["added_at"],
        last_listed_at=row["last_listed_at"],
        status=row["status"],
        error=row["error"],
        repos=int(row["repos"]),
        keep=json.loads(row["keep"]) if row["keep"] else None,
    )
