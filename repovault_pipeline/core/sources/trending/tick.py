"""A trending schedule tick: the list turned into planned runs (`plan_trending_tick`, no side
effect, so evaluating the schedule writes nothing), and the intake run's work on them
(`accept_tick`): lineage rows and `pendientes` messages, which the injector archives.

Plain Python (no Dagster): the schedule glue only turns a `TickPlan` into run requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from repovault_pipeline.core.common.identity import InvalidRepoUrl, RepoRef, parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.lifecycle import NewRequest, RequestLifecycle
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import LineageStore
from repovault_pipeline.core.lineage.rows import Injected
from repovault_pipeline.core.sources.trending.client import (
    TrendingClient,
    TrendingError,
    TrendingList,
)
from repovault_pipeline.core.sources.trending.page import InvalidTrendingOption, TrendingRepo

TOP_N = 10
TRENDING_SOURCE = "trending"

TAG_TRENDING_DATE = "repovault/trending_date"
TAG_TRENDING_RANK = "repovault/trending_rank"
TAG_TRENDING_LIST = "repovault/trending_list"  # "page" or "search_api": where the rank is from
_TRENDING_NAMESPACE = uuid.UUID("0d3c8f5e-2a77-4c53-9a43-6f0e7b1d9c24")


@dataclass(frozen=True)
class PlannedRun:
    """One run the tick requests; everything in it is derived from the tick date and repo."""

    rank: int
    repo: TrendingRepo
    repo_id: str
    repo_url: str
    run_key: str
    request_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class RejectedEntry:
    rank: int
    repo: TrendingRepo
    reason: str
    request_id: str


@dataclass(frozen=True)
class TickPlan:
    """What a tick does: the runs to request, the entries refused, or why it does nothing."""

    requested_at: datetime
    runs: tuple[PlannedRun, ...] = ()
    rejected: tuple[RejectedEntry, ...] = ()
    listing: TrendingList | None = None
    skip_reason: str | None = None


def trending_run_key(day: date, repo_id: str) -> str:
    """One run per repository per trending day: a re-evaluated tick gives the same keys."""
    return f"trending:{day.isoformat()}:{repo_id}"


def trending_request_id(run_key: str) -> str:
    """Derived from the run key, so a re-evaluated tick writes the same lineage row."""
    return str(uuid.uuid5(_TRENDING_NAMESPACE, run_key))


def plan_trending_tick(
    settings: Settings,
    scheduled_at: datetime | None = None,
    *,
    client: TrendingClient | None = None,
    limit: int = TOP_N,
    language: str | None = None,
    since: str | None = None,
    preview: bool = False,
) -> TickPlan:
    """Read the list and turn its first `limit` acceptable entries into planned runs.

    No side effect: the schedule hands it to the intake run (`accept_tick`); the CLI prints it.
    `scheduled_at` (default now) fixes the day of the run keys and the requests' time.
    An entry whose URL is refused (REPOVAULT_ALLOWED_*) is reported and the next one moves up.
    When github.com is not allowed the schedule does not read the list it could not use; a
    `preview` (`repovault trending`) reads it anyway, every entry refused with the reason.
    """
    requested_at = (scheduled_at or datetime.now(UTC)).astimezone(UTC)
    refused = _github_refused(settings)
    if refused and not preview:
        return TickPlan(requested_at, skip_reason=refused)
    client = client or TrendingClient(settings)
    language = language if language is not None else settings.trending_language
    try:
        listing = client.fetch(language, since or settings.trending_since, as_of=requested_at)
    except (TrendingError, InvalidTrendingOption) as exc:
        return TickPlan(requested_at, skip_reason=f"no trending list: {exc}")
    runs, rejected = _plan_runs(settings, listing, requested_at, limit)
    skip_reason = refused
    if not runs and not refused:
        reasons = "; ".join(f"{r.repo.full_name}: {r.reason}" for r in rejected[:3])
        skip_reason = f"none of the {len(listing.repos)} trending repositories can be requested"
        skip_reason += f" ({reasons})" if reasons else ""
    return TickPlan(requested_at, tuple(runs), tuple(rejected), listing, skip_reason)


def _github_refused(settings: Settings) -> str | None:
    """Why no trending repository can be requested at all, or None."""
    if "github.com" in settings.allowed_hosts and "https" in settings.allowed_schemes:
        return None
    return (
        "trending repositories live on https://github.com, which is not allowed "
        f"(REPOVAULT_ALLOWED_HOSTS={','.join(settings.allowed_hosts)}, "
        f"REPOVAULT_ALLOWED_SCHEMES={','.join(settings.allowed_schemes)}); "
        "add github.com and https to archive them"
    )


def _plan_runs(
    settings: Settings, listing: TrendingList, requested_at: datetime, limit: int
) -> tuple[list[PlannedRun], list[RejectedEntry]]:
    """The first `limit` entries whose URL passes the rules, once each, and those refused."""
    day = requested_at.date()
    runs: list[PlannedRun] = []
    rejected: list[RejectedEntry] = []
    seen: set[str] = set()
    for rank, repo in enumerate(listing.repos, start=1):
        if len(runs) >= limit:
            break
        key = trending_run_key(day, f"github.com/{repo.full_name}".lower())
        try:
            ref = parse_repo_url(repo.url, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            rejected.append(RejectedEntry(rank, repo, str(exc), trending_request_id(key)))
            continue
        if ref.repo_id in seen:
            continue
        seen.add(ref.repo_id)
        run_key = trending_run_key(day, ref.repo_id)
        request_id = trending_request_id(run_key)
        tags = {
            **request_tags(request_id, ref.url, TRENDING_SOURCE, requested_at),
            TAG_TRENDING_DATE: day.isoformat(),
            TAG_TRENDING_RANK: str(rank),
            TAG_TRENDING_LIST: listing.source,
        }
        runs.append(PlannedRun(rank, repo, ref.repo_id, ref.url, run_key, request_id, tags))
    return runs, rejected


@dataclass(frozen=True)
class TickEntry:
    """One entry of a tick as its intake run receives it (run config): requested, or refused
    with `reason`."""

    rank: int
    repo_url: str
    request_id: str
    reason: str | None = None


@dataclass
class TickAcceptance:
    """What the intake run did: the requests it queued and the entries it refused."""

    requested: list[tuple[TickEntry, RepoRef]] = field(default_factory=list)
    refused: list[TickEntry] = field(default_factory=list)


def tick_entries(plan: TickPlan) -> list[TickEntry]:
    """The plan's entries in rank order, for the intake run's config."""
    entries = [TickEntry(r.rank, r.repo_url, r.request_id) for r in plan.runs]
    entries += [TickEntry(r.rank, r.repo.url, r.request_id, r.reason) for r in plan.rejected]
    return sorted(entries, key=lambda e: e.rank)


def accept_tick(
    settings: Settings,
    lineage: LineageStore,
    gateway: KafkaGateway,
    requested_at: datetime,
    entries: list[TickEntry],
) -> TickAcceptance:
    """The trending intake run's work, never the schedule's evaluation (which must have no
    effect): a `rejected` row per refused entry, a `pending` row and a `pendientes` message per
    requested one; the injector turns those into archive runs like any request. Request ids
    derive from the tick's day and repository, so a re-executed intake run writes no new row and
    its messages map to the runs of the first (run key `request:<request_id>`). The config can
    be edited in the launchpad, so every URL is validated again."""
    done = TickAcceptance()
    for entry in entries:
        if entry.reason is not None:
            done.refused.append(entry)
            continue
        try:
            ref = parse_repo_url(entry.repo_url, settings.allowed_schemes, settings.allowed_hosts)
        except InvalidRepoUrl as exc:
            done.refused.append(replace(entry, reason=str(exc)))
            continue
        done.requested.append((entry, ref))
    lifecycle = RequestLifecycle(lineage, gateway, settings.topics)
    lifecycle.reject(
        [
            Injected(
                e.request_id,
                e.repo_url,
                None,
                TRENDING_SOURCE,
                created_at=requested_at,
                injected_at=requested_at,  # when the tick judged it
                error=e.reason,
            )
            for e in done.refused
        ]
    )
    lifecycle.queue_all(
        [
            NewRequest(ref.url, ref.repo_id, TRENDING_SOURCE, entry.request_id, requested_at)
            for entry, ref in done.requested
        ]
    )
    return done


def iter_rows(plan: TickPlan) -> Iterator[tuple[int, TrendingRepo, str | None]]:
    """Planned and rejected entries in rank order: (rank, repo, reason it is refused or None)."""
    entries: list[tuple[int, TrendingRepo, str | None]] = [
        (r.rank, r.repo, None) for r in plan.runs
    ]
    entries += [(r.rank, r.repo, r.reason) for r in plan.rejected]
    yield from sorted(entries, key=lambda e: e[0])
