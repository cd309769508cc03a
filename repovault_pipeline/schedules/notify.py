"""`notify_daily_schedule`: the daily summary (`core.notify.digest`) as one `notify_job` run.
Evaluating the schedule reads the figures and requests the run; only a real tick launches it,
so "Test schedule" in the UI sends nothing."""

from __future__ import annotations

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ..core.notify.digest import digest
from ..core.notify.events import wanted
from ..jobs import notify_job
from ..resources import LineageResource, NotifyResource, SourcesResource
from ..sensors.notify import notify_runs


def _stored_bytes(context: ScheduleEvaluationContext) -> int | None:
    """The vault's size from the latest `vault_stats` (hourly): read, never computed here."""
    found = context.instance.fetch_materializations(AssetKey("vault_stats"), limit=1).records
    materialization = found[0].asset_materialization if found else None
    value = materialization.metadata.get("stored_bytes") if materialization else None
    return int(value.value) if value is not None and isinstance(value.value, int | float) else None


@schedule(
    name="notify_daily_schedule",
    cron_schedule="0 7 * * *",
    execution_timezone="UTC",
    job=notify_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily at 07:00 UTC, when REPOVAULT_NOTIFY_EVENTS lists `daily`: the last 24 h "
    "(completed, unchanged, partial, failed, rejected requests), stale repositories, tracked "
    "sources in error and the vault's size, sent to REPOVAULT_NOTIFY_URLS.",
)
def notify_daily_schedule(
    context: ScheduleEvaluationContext,
    lineage: LineageResource,
    notify: NotifyResource,
    sources: SourcesResource,
) -> RunRequest | SkipReason:
    settings = notify.settings()
    if not wanted(settings, "daily"):
        return SkipReason("no daily summary: REPOVAULT_NOTIFY_URLS unset or `daily` not listed")
    summary = digest(
        lineage.store().engine,
        context.scheduled_execution_time,
        sources.settings().refresh_interval_h,
        _stored_bytes(context),
    )
    [run] = notify_runs([summary.notification()], settings)
    return run
