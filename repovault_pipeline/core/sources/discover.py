"""One tick of `sources_sensor`, without Dagster: list the tracked sources that are due, record
their new repositories in `repo_state` (and every listed one's activity stamp, which refresh
compares), mark those a complete listing no longer shows and the remote confirms missing as
`gone`, and pick the next batch of first archive runs.

A tick stays short: sources are listed until LISTING_BUDGET_S is spent (at least one), and at
most `batch` first runs are requested, walking the never-archived repositories in `repo_id`
order from the cursor, so a source of 5,000 repositories takes several ticks, never one long one.

`plan_sources` only reads (the forges' APIs, `git ls-remote`, the fleet's rows), so a test of the
sensor shows the plan; `record_sources`, on a daemon tick, writes it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.fleet_rows import RepoState
from repovault_pipeline.core.sources.forges.listing import Listing, SourceLister
from repovault_pipeline.core.sources.refresh import check

TRACK_SOURCE = "track"
LISTING_INTERVAL_H = 24  # sources are listed daily
LISTING_BUDGET_S = 20.0  # a tick starts no new listing past this (Dagster's tick timeout is 60 s)
FIRST_RUN_BATCH = 200
_TRACK_NAMESPACE = uuid.UUID("3f6c2a8e-9b4d-4e1a-8c7f-2d5b6e9a1c03")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstRun:
    """The first archive run of a tracked repository."""

    repo_id: str
    repo_url: str
    requested_at: datetime
    keep: dict[str, bool] | None = None  # its source's choice

    @property
    def run_key(self) -> str:
        return f"track:{self.repo_id}"

    @property
    def request_id(self) -> str:
        return str(uuid.uuid5(_TRACK_NAMESPACE, self.run_key))

    @property
    def tags(self) -> dict[str, str]:
        return request_tags(
            self.request_id, self.repo_url, TRACK_SOURCE, self.requested_at, self.keep
        )


@dataclass
class SourcesTick:
    listings: list[Listing] = field(default_factory=list)
    new_repos: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    first_runs: list[FirstRun] = field(default_factory=list)
    cursor: str = ""

    def preview(self) -> str:
        """What recording a planned tick would do, for a dry run ("Test sensor")."""
        listed = sum(len(listing.repos) for listing in self.listings)
        firsts = ", ".join(run.repo_id for run in self.first_runs)
        return (
            f"listed {len(self.listings)} sources ({listed} repositories); would record "
            f"{len(self.new_repos)} new repositories ({', '.join(self.new_repos) or 'none'}) "
            f"and the listings, mark {len(self.gone)} gone, and request the first runs of "
            f"{len(self.first_runs)} known repositories ({firsts or 'none'}) and of the new ones "
            f"(at most {FIRST_RUN_BATCH} a tick)"
        )


def sources_tick(
    settings: Settings,
    fleet: FleetStore,
    at: datetime,
    cursor: str = "",
    lister: SourceLister | None = None,
    batch: int = FIRST_RUN_BATCH,
    budget_s: float = LISTING_BUDGET_S,
) -> SourcesTick:
    """One daemon tick: `plan_sources`, `record_sources`, then the next first runs."""
    tick = plan_sources(settings, fleet, at, cursor, lister, batch, budget_s)
    record_sources(fleet, at, tick)
    tick.first_runs, tick.cursor = _first_runs(fleet, at, cursor, batch)
    return tick


def plan_sources(
    settings: Settings,
    fleet: FleetStore,
    at: datetime,
    cursor: str = "",
    lister: SourceLister | None = None,
    batch: int = FIRST_RUN_BATCH,
    budget_s: float = LISTING_BUDGET_S,
) -> SourcesTick:
    """List the due sources, find their new and gone repositories, and the first runs of the
    repositories already recorded; records nothing."""
    lister = lister or SourceLister(settings)
    tick = SourcesTick()
    started = time.monotonic()
    known: set[str] = set()
    for row in fleet.sources(due_before=at - timedelta(hours=LISTING_INTERVAL_H)):
        if tick.listings and time.monotonic() - started > budget_s:
            break  # the rest are still due: the next tick lists them
        listing = lister.list(row.source)
        tick.listings.append(listing)
        listed = [ref.repo_id for ref, _ in listing.repos]
        known |= {state.repo_id for state in fleet.get(listed)}
        tick.new_repos += [r for r in dict.fromkeys(listed) if r not in known]
        known |= set(listed)
        if listing.complete:
            tick.gone += _confirm_missing(settings, fleet, listing)
    tick.first_runs, tick.cursor = _first_runs(fleet, at, cursor, batch)
    return tick


def record_sources(fleet: FleetStore, at: datetime, tick: SourcesTick) -> None:
    """Record the tick's listings, new repositories, forge stamps and gone repositories."""
    for listing in tick.listings:
        fleet.record_listing(listing.source.source_id, at, listing.complete, listing.error)
        fleet.add_repos(
            listing.source.source_id, [(ref.repo_id, ref.url) for ref, _ in listing.repos], at
        )
        fleet.record_stamps({ref.repo_id: r.stamp for ref, r in listing.repos if r.stamp})
    if tick.gone:
        fleet.record_checks(at, gone=tick.gone)


def _first_runs(
    fleet: FleetStore, at: datetime, cursor: str, batch: int
) -> tuple[list[FirstRun], str]:
    """The next `batch` first runs from `cursor`, and the cursor after them."""
    pending = fleet.never_archived(cursor, batch)
    keeps = fleet.keeps()
    runs = [FirstRun(s.repo_id, s.repo_url, at, keeps.get(s.source_id or "")) for s in pending]
    # Wrap to the start once the end is reached; Dagster skips run keys it has seen.
    return runs, pending[-1].repo_id if len(pending) == batch else ""


def _confirm_missing(settings: Settings, fleet: FleetStore, listing: Listing) -> list[str]:
    """Repositories of the source that a complete listing no longer shows: `gone` only when
    their remote says "not found" too (a repository moved to another owner still answers)."""
    listed = {ref.repo_id for ref, _ in listing.repos}
    missing: list[RepoState] = [
        state
        for state in fleet.of_source(listing.source.source_id)
        if state.repo_id not in listed and state.upstream != "gone"
    ]
    if not missing:
        return []
    return check(settings, missing).gone
