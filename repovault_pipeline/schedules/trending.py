"""`trending_top10_schedule`: every day at 06:00 UTC, one archive run per trending top-10 repo.

The list and everything derived from it (run keys, request ids, tags) come from
`core.trending.plan_trending_tick`; this module only does what needs Dagster: add the partitions,
record the `pending` rows, and yield the run requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from sqlalchemy.exc import SQLAlchemyError

from ..core.lineage import Injected
from ..core.trending import TRENDING_SOURCE, TickPlan, plan_trending_tick
from ..jobs import archive_repo_job
from ..partitions import REPOSITORIES
from ..resources import LineageResource


@schedule(
    name="trending_top10_schedule",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    job=archive_repo_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Daily at 06:00 UTC: archive the top 10 of https://github.com/trending "
        "(REPOVAULT_TRENDING_LANGUAGE / REPOVAULT_TRENDING_SINCE); falls back to the GitHub "
        "Search API when the page cannot be read. Runs are tagged repovault/trending_date."
    ),
)
def trending_top10_schedule(
    context: ScheduleEvaluationContext, lineage: LineageResource
) -> Iterator[RunRequest | SkipReason]:
    plan = plan_trending_tick(lineage.settings(), _tick_time(context))
    if plan.skip_reason:
        context.log.warning(f"trending tick skipped: {plan.skip_reason}")
        yield SkipReason(plan.skip_reason)
        return
    _report(context, plan)
    # Schedules cannot return dynamic partition requests (only sensors can, via SensorResult),
    # so the partitions are added here; adding an existing key is a no-op.
    context.instance.add_dynamic_partitions(REPOSITORIES, [run.repo_id for run in plan.runs])
    _record(context, lineage, plan)
    for run in plan.runs:
        yield RunRequest(run_key=run.run_key, partition_key=run.repo_id, tags=run.tags)


def _tick_time(context: ScheduleEvaluationContext) -> datetime:
    """The tick's scheduled time (the same on every re-evaluation of a tick), else now."""
    try:
        return context.scheduled_execution_time.astimezone(UTC)
    except Exception:  # evaluated without a tick time (tests, tooling): check.failed
        return datetime.now(UTC)


def _report(context: ScheduleEvaluationContext, plan: TickPlan) -> None:
    listing = plan.listing
    if listing is not None and listing.fallback_reason:
        context.log.warning(
            f"trending page unusable ({listing.fallback_reason}); used {listing.url} instead"
        )
    for position in listing.unreadable if listing is not None else ():
        context.log.warning(
            f"trending card #{position} has no readable repository link (has GitHub changed its "
            "markup?); it was skipped"
        )
    for entry in plan.rejected:
        context.log.warning(
            f"trending #{entry.rank} {entry.repo.full_name} not requested: {entry.reason}"
        )
    names = ", ".join(f"#{run.rank} {run.repo_id}" for run in plan.runs)
    context.log.info(f"requesting {len(plan.runs)} trending repositories: {names}")


def _record(context: ScheduleEvaluationContext, lineage: LineageResource, plan: TickPlan) -> None:
    """One `pending` row per run (and a `rejected` row per refused entry), keyed by the
    deterministic request id, so a re-evaluated tick writes nothing new. A lineage outage does
    not cost the day's runs: each run creates its row when it starts."""
    try:
        store = lineage.store()
        store.record_rejected(
            [
                Injected(
                    entry.request_id,
                    entry.repo.url,
                    None,
                    TRENDING_SOURCE,
                    created_at=plan.requested_at,
                    injected_at=plan.requested_at,  # when the tick judged it
                    error=entry.reason,
                )
                for entry in plan.rejected
            ]
        )
        for run in plan.runs:
            store.record_pending(
                run.repo_url,
                run.repo_id,
                TRENDING_SOURCE,
                request_id=run.request_id,
                created_at=plan.requested_at,
            )
    except SQLAlchemyError as exc:
        context.log.error(
            f"could not record the trending requests in lineage ({exc.__class__.__name__}); "
            "the runs record them when they start"
        )
