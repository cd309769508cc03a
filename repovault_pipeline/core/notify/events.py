"""The notifications, one record each (`Notification`), built from what RepoVault already
records: a request's lineage row, a `restorable` verdict, a `repo_sources` row, a `repo_state`
row. Bodies hold repository ids, statuses, reasons, snapshot and run ids, each masked: never a
URL's credentials or a token (a clone URL may carry them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from repovault_pipeline.core.common.redact import mask_and_cut
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.rows import Request
from repovault_pipeline.core.sources.fleet_rows import RepoState, SourceRow
from repovault_pipeline.core.vault.outcome import LFS_MISSING

Event = Literal["failed", "partial", "unrestorable", "source_error", "stale", "daily"]
MAX_TEXT = 2000  # a detail longer than this is cut (after masking)
# A repository is stale once its last check is this much older than REPOVAULT_REFRESH_INTERVAL_H:
# refresh_sensor checks 200 repositories a minute, so a healthy fleet is never that late.
STALE_GRACE = timedelta(hours=1)


class Notification(BaseModel):
    """One message. `key` is its identity: the same failure always has the same key, and a key
    is sent once (the run key of its `notify_job` run)."""

    model_config = ConfigDict(frozen=True)

    event: Event
    key: str
    title: str
    body: str
    repo_id: str | None = None


def wanted(settings: Settings, event: Event) -> bool:
    """Whether `event` is sent: some URL is configured and REPOVAULT_NOTIFY_EVENTS lists it."""
    return bool(settings.notify_urls) and event in settings.notify_events


def notice(
    event: Event, key: str, title: str, lines: list[str], repo_id: str | None = None
) -> Notification:
    """A notification whose body is `lines`, masked and cut to MAX_TEXT."""
    body = mask_and_cut("\n".join(lines), MAX_TEXT)
    return Notification(event=event, key=key, title=title, body=body, repo_id=repo_id)


def archive_notice(
    row: Request | None, run_id: str, run_failure: str | None = None
) -> Notification | None:
    """`failed` or `partial` for the request an archive run ended, as its lineage row says once
    the run is over (the row is the truth: a partial run recorded its reasons there, a failed
    one its error); None for every other status, a run of no request, or a row a later run
    has taken over (a re-execution tells its own outcome). A failed run whose
    row it could not close (its worker died: reconcile closes it later) is `failed` with the
    run's own reason, `run_failure`."""
    if row is None or row.run_id not in (run_id, None):  # None: refused before it started
        return None
    status = row.status
    if run_failure is not None and status == "in_progress":
        status, row = "failed", replace(row, error=run_failure)
    if status not in ("failed", "partial"):
        return None
    repo = row.repo_id or "an unknown repository"
    if status == "failed":
        title = f"RepoVault: archive of {repo} failed"
        detail = f"error: {row.error or 'no reason recorded'}"
    else:
        title = f"RepoVault: archive of {repo} is partial"
        reasons = row.reasons or {}
        detail = "\n".join(f"{name}: {text}" for name, text in sorted(reasons.items()))
        detail = f"missing parts:\n{detail}" if detail else "missing parts: not recorded"
    lines = [
        f"repository: {repo}",
        f"status: {status}",
        f"request: {row.request_id} (source {row.source})",
        f"run: {run_id}",
        *([f"snapshot: {row.snapshot_id}"] if row.snapshot_id else []),
        detail,
    ]
    key = f"{status}:{row.request_id}:{run_id}"
    return notice(status, key, title, lines, row.repo_id)  # type: ignore[arg-type]


def unrestorable_notice(
    repo_id: str, run_id: str, metadata: Mapping[str, str], archive: Request | None
) -> Notification | None:
    """`unrestorable` for a failed `restorable` verdict (its metadata: `snapshot_id`, `reason`,
    `detail`); None when the run's own `partial` message already says it (LFS objects the
    forge lost fail the check too: one message per failure)."""
    reason = metadata.get("reason", "unknown")
    if archive is not None and archive.status == "partial" and reason == LFS_MISSING:
        return None
    snapshot = metadata.get("snapshot_id") or "the latest snapshot"
    lines = [
        f"repository: {repo_id}",
        f"snapshot: {snapshot}",
        f"reason: {reason}",
        f"detail: {metadata.get('detail', '')}",
        f"run: {run_id}",
        "the next archive run of this repository writes a fresh snapshot",
    ]
    title = f"RepoVault: {repo_id} does not restore ({reason})"
    return notice("unrestorable", f"unrestorable:{repo_id}:{run_id}", title, lines, repo_id)


def source_error_notices(sources: Iterable[SourceRow], known: set[str]) -> list[Notification]:
    """`source_error` for each tracked source whose last listing failed and that was not in
    error already (`known`: the sources in error at the last tick): once per episode."""
    notices = []
    for row in sources:
        source = row.source
        if row.status != "error" or source.source_id in known:
            continue
        listed = f"{row.last_listed_at:%Y-%m-%d %H:%M} UTC" if row.last_listed_at else "never"
        lines = [
            f"source: {source.spec} ({source.host})",
            f"listed: {listed}",
            f"error: {row.error or 'no reason recorded'}",
            f"repositories known from it: {row.repos}; no new one is found until it lists again",
        ]
        # The listing that found the error starts the episode.
        key = f"source_error:{source.source_id}:{_stamp(row.last_listed_at)}"
        title = f"RepoVault: tracked source {source.spec} cannot be listed"
        notices.append(notice("source_error", key, title, lines))
    return notices


def _stamp(at: datetime | None) -> str:
    return at.isoformat(timespec="microseconds") if at else "never"


def stale_since(at: datetime, interval_h: int) -> datetime:
    """Repositories last checked before this are stale."""
    return at - timedelta(hours=interval_h) - STALE_GRACE


def stale_notice(state: RepoState, interval_h: int) -> Notification:
    """`stale` for a repository not checked for longer than the refresh interval and its grace;
    keyed by its last check, so one message per staleness episode."""
    checked = f"{state.last_checked_at:%Y-%m-%d %H:%M} UTC" if state.last_checked_at else "never"
    lines = [
        f"repository: {state.repo_id}",
        f"last checked: {checked} (refresh interval: {interval_h} h)",
        f"upstream: {state.upstream} ({state.consecutive_failures} failed checks in a row)",
        f"latest snapshot: {state.last_snapshot_id or 'none'}",
        "is refresh_sensor running? (Dagster UI: Automation)",
    ]
    key = f"stale:{state.repo_id}:{_stamp(state.last_checked_at)}"
    return notice("stale", key, f"RepoVault: {state.repo_id} is stale", lines, state.repo_id)
