"""`vault_stats`: the figures of the whole vault, from `repo_requests`/`repo_state` (SQL) and the
latest manifest of every bucket. Every figure is a number under a fixed name (zero when there is
nothing to count), so Dagster can plot each one's history from the asset's metadata."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import PARTIAL_REASONS, STATUSES, LineageStore, now
from repovault_pipeline.core.lineage.tables import SOURCES, repo_requests, repo_state
from repovault_pipeline.core.vault.layout import BUNDLE, METADATA, SNAPSHOTS, WIKI
from repovault_pipeline.core.vault.lfs import LFS_PREFIX
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.reader import archived_repositories
from repovault_pipeline.core.vault.records import Manifest
from repovault_pipeline.core.vault.store import ObjectStore
from repovault_pipeline.core.vault.upload import human_size

WINDOW = timedelta(hours=24)
LARGEST = 10


@dataclass(frozen=True)
class StoredSizes:
    """What one repository takes in the vault, in bytes, by part: the bundles of every code
    snapshot kept, `tree/` (the latest snapshot's HEAD, LFS files with their content), the LFS
    objects, the wiki's snapshots and the forge metadata (records and release assets)."""

    bundles: int
    tree: int
    lfs: int
    wiki: int
    metadata: int

    @property
    def total(self) -> int:
        return self.bundles + self.tree + self.lfs + self.wiki + self.metadata


def stored_sizes(store: ObjectStore, bucket: str, manifest: Manifest) -> StoredSizes:
    """The sizes of the repository in `bucket` whose latest manifest is `manifest`, from the
    store's listing (`tree/` from the manifest: it can hold millions of objects)."""

    def listed(prefix: str) -> int:
        return sum(info.size for info in store.list(bucket, prefix))

    return StoredSizes(
        bundles=sum(
            info.size for info in store.list(bucket, SNAPSHOTS) if info.key.endswith(f"/{BUNDLE}")
        ),
        tree=manifest.tree.bytes if manifest.tree else 0,
        lfs=listed(LFS_PREFIX),
        wiki=listed(WIKI.prefix),
        metadata=listed(METADATA.prefix),
    )


@dataclass
class VaultStats:
    """`figures`: name -> number (the plottable part); the rest is for tables and the API."""

    at: datetime
    figures: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    largest: list[dict] = field(default_factory=list)
    stale: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "figures": self.figures,
            "failures_24h": self.failures,
            "largest": self.largest,
            "past_refresh_interval": self.stale,
        }


def compute_stats(
    settings: Settings, store: ObjectStore, lineage: LineageStore, at: datetime | None = None
) -> VaultStats:
    at = at or now()
    stats = VaultStats(at=at)
    figures = stats.figures
    _request_counts(lineage, figures)
    _latencies(lineage, at, figures)
    stats.failures, by_name = _failures(lineage, at)
    figures["failures_24h"] = sum(stats.failures.values())
    for reason in PARTIAL_REASONS:
        figures[f"partial_{reason}_24h"] = by_name[reason]
    archived = list(archived_repositories(store, settings.bucket_prefix))
    manifests = [a.manifest for a in archived]
    figures["archived_repositories"] = len(manifests)
    figures["latest_bundle_bytes"] = sum(m.bundle.size for m in manifests)
    figures["tree_bytes"] = sum(m.tree.bytes for m in manifests if m.tree)
    figures["tree_files"] = sum(m.tree.files for m in manifests if m.tree)
    sizes = [stored_sizes(store, a.bucket, a.manifest) for a in archived]
    figures["bundle_bytes"] = sum(s.bundles for s in sizes)
    figures["lfs_bytes"] = sum(s.lfs for s in sizes)
    figures["wiki_bytes"] = sum(s.wiki for s in sizes)
    figures["metadata_bytes"] = sum(s.metadata for s in sizes)
    figures["stored_bytes"] = sum(s.total for s in sizes)
    stats.largest = [
        {"repo_id": a.manifest.repo_id, "bundle_bytes": a.manifest.bundle.size, "bucket": a.bucket}
        for a in sorted(archived, key=lambda a: -a.manifest.bundle.size)[:LARGEST]
    ]
    ages = {
        repo_id: round((at - when).total_seconds() / 3600, 2)
        for repo_id, when in _last_checked(lineage, manifests).items()
    }
    stats.stale = [
        {"repo_id": repo_id, "age_h": age}
        for repo_id, age in sorted(ages.items(), key=lambda item: -item[1])
        if age > settings.refresh_interval_h
    ]
    figures["past_refresh_interval"] = len(stats.stale)
    figures["oldest_check_age_h"] = max(ages.values(), default=0.0)
    return stats


def _request_counts(lineage: LineageStore, figures: dict[str, float]) -> None:
    """Requests by status and by source, every known value present (zero when none)."""
    query = select(repo_requests.c.status, repo_requests.c.source, func.count()).group_by(
        repo_requests.c.status, repo_requests.c.source
    )
    by_status: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    with lineage.engine.connect() as conn:
        for status, source, count in conn.execute(query):
            by_status[status] += count
            by_source[source] += count
    figures["requests_total"] = sum(by_status.values())
    for status in STATUSES:
        figures[f"requests_{status}"] = by_status[status]
    for source in SOURCES:
        figures[f"requests_source_{source}"] = by_source[source]


def _latencies(lineage: LineageStore, at: datetime, figures: dict[str, float]) -> None:
    """Queue wait (injected - created), start wait (started - injected) and run time
    (finished - started) in seconds, p50 and p95, of the requests whose later timestamp falls
    in the last 24 hours."""
    c = repo_requests.c
    since = at - WINDOW
    spans = {
        "queue_wait": (c.creation_timestamp, c.inyector_timestamp),
        "start_wait": (c.inyector_timestamp, c.worker_start_timestamp),
        "run_time": (c.worker_start_timestamp, c.worker_finishing_timestamp),
    }
    with lineage.engine.connect() as conn:
        for name, (start, end) in spans.items():
            rows = conn.execute(
                select(start, end).where(start.is_not(None), end > since, end <= at)
            ).all()
            values = sorted(max(0.0, (b - a).total_seconds()) for a, b in rows)
            figures[f"{name}_count_24h"] = len(values)
            figures[f"{name}_p50_s"] = percentile(values, 50)
            figures[f"{name}_p95_s"] = percentile(values, 95)


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none): a value that occurred."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return round(ordered[int(rank) - 1], 3)


_VARIABLE = re.compile(r"[0-9a-f]{7,}|\d+|'[^']*'|\"[^\"]*\"|\([^)]*\)")


def failure_reason(error: str | None) -> str:
    """A failure's reason without what varies between occurrences (ids, numbers, quoted names,
    parenthesised detail) and without the advice after the first ';', so equal causes count
    together."""
    text = _VARIABLE.sub("", (error or "").strip()).split(";", 1)[0]
    return " ".join(text.split())[:100] or "no reason recorded"


def _failures(lineage: LineageStore, at: datetime) -> tuple[dict[str, int], Counter[str]]:
    """The requests of the last 24 hours a part of which failed, by reason, most frequent
    first: failed ones by their error, partial ones by their reason names (`partial:
    metadata_failed`), so that a forge metadata step that failed its Dagster run counts here
    as one failure too. And the partial ones by each reason name."""
    c = repo_requests.c
    query = select(c.status, c.error, c.reasons).where(
        c.status.in_(("failed", "partial")), c.worker_finishing_timestamp > at - WINDOW
    )
    counts: Counter[str] = Counter()
    by_name: Counter[str] = Counter()
    with lineage.engine.connect() as conn:
        for status, error, reasons in conn.execute(query):
            if status == "failed":
                counts[failure_reason(error)] += 1
                continue
            names = sorted(json.loads(reasons or "{}"))
            counts[f"partial: {', '.join(names)}"] += 1
            by_name.update(names)
    return dict(counts.most_common()), by_name


def _last_checked(lineage: LineageStore, manifests: list[Manifest]) -> dict[str, datetime]:
    """When each archived repository was last known to match upstream: the newest of its
    latest snapshot, its last completed, unchanged or partial request, and
    `repo_state.last_checked_at`."""
    checked = {m.repo_id: datetime.fromisoformat(m.created_at) for m in manifests}
    c = repo_requests.c
    finished = (
        select(c.repo_id, func.max(c.worker_finishing_timestamp))
        .where(c.status.in_(("completed", "unchanged", "partial")))
        .group_by(c.repo_id)
    )
    state = select(repo_state.c.repo_id, repo_state.c.last_checked_at)
    with lineage.engine.connect() as conn:
        for repo_id, when in [*conn.execute(finished), *conn.execute(state)]:
            if repo_id in checked and when is not None and when > checked[repo_id]:
                checked[repo_id] = when
    return checked


def bucket_link(settings: Settings, store: ObjectStore, bucket: str) -> str:
    """Where a person browses a bucket: its page in the MinIO console when
    REPOVAULT_MINIO_CONSOLE_URL is set, else the store's own location (S3 URL or folder)."""
    if settings.minio_console_url:
        return f"{settings.minio_console_url}/browser/{bucket}"
    return store.location(bucket)


def sizes_line(result: ArchiveResult) -> str:
    """A run's sizes for people: `bundle 1.2 MB; tree 340 files, 2.1 MB; uploaded 0.5 MB`."""
    return (
        f"bundle {human_size(result.bundle_size)}; tree {result.tree_files} files, "
        f"{human_size(result.tree_bytes)}; uploaded {human_size(result.bytes_uploaded)}"
    )
