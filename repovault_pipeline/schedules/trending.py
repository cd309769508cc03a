"""`trending_top10_schedule`: every day at 06:00 UTC, the trending top 10 is requested.

Evaluating the schedule (a daemon tick, "Test schedule" in the UI, `dagster schedule preview`)
only reads the list (`core.sources.trending.tick.plan_trending_tick`) and asks for one run of
`trending_intake_job` with the planned entries as its config: no row, partition or run comes
from an evaluation. That run records the requests and publishes them to `pendientes`
(`core.sources.trending.tick.accept_tick`); the injector turns them into archive runs. (A
schedule cannot add dynamic partitions the way a sensor can, so the archive runs cannot be its
own.)
"""

# No `from __future__ import annotations`: Dagster reads the op's config annotation as a class.
from datetime import UTC, datetime

from dagster import (
    Config,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunConfig,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    job,
    op,
    schedule,
)

from ..assets.archive import TRANSIENT_RETRY
from ..core.sources.trending.tick import (
    TAG_TRENDING_DATE,
    TAG_TRENDING_LIST,
    TickEntry,
    TickPlan,
    accept_tick,
    plan_trending_tick,
    tick_entries,
)
from ..resources import KafkaResource, LineageResource

INTAKE_OP = "request_trending"


class TrendingEntry(Config):
    """One entry of the list: requested, or refused with `reason`."""

    rank: int
    repo_url: str
    request_id: str
    reason: str | None = None


class TrendingTick(Config):
    """The entries a tick planned, and the tick's time (the requests' creation time)."""

    requested_at: str
    entries: list[TrendingEntry]


@op(name=INTAKE_OP, retry_policy=TRANSIENT_RETRY, tags={"kind": "kafka"})
def request_trending(
    context: OpExecutionContext,
    config: TrendingTick,
    lineage: LineageResource,
    kafka: KafkaResource,
) -> None:
    """Record the tick's requests (`pending`, or `rejected` with the reason) and publish the
    requested ones to `pendientes`."""
    done = accept_tick(
        kafka.settings(),
        lineage.store(),
        kafka.gateway(),
        datetime.fromisoformat(config.requested_at),
        [TickEntry(**entry.model_dump()) for entry in config.entries],
    )
    for entry in done.refused:
        context.log.warning(
            f"trending #{entry.rank} {entry.repo_url} not requested: {entry.reason}"
        )
    names = ", ".join(f"#{entry.rank} {ref.repo_id}" for entry, ref in done.requested)
    context.log.info(f"requested {len(done.requested)} trending repositories: {names}")


@job(
    name="trending_intake_job",
    description="Record and request (on `pendientes`) the trending repositories a tick of "
    "trending_top10_schedule planned; the injector archives them.",
)
def trending_intake_job() -> None:
    request_trending()


@schedule(
    name="trending_top10_schedule",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    job=trending_intake_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Daily at 06:00 UTC: request the top 10 of https://github.com/trending "
        "(REPOVAULT_TRENDING_LANGUAGE / REPOVAULT_TRENDING_SINCE; the GitHub Search API when the "
        "page cannot be read) through one run of trending_intake_job (run key "
        "trending:<date>, tagged repovault/trending_date). Testing it writes and requests nothing."
    ),
)
def trending_top10_schedule(
    context: ScheduleEvaluationContext, lineage: LineageResource
) -> RunRequest | SkipReason:
    plan = plan_trending_tick(lineage.settings(), _tick_time(context))
    if plan.skip_reason:
        context.log.warning(f"trending tick skipped: {plan.skip_reason}")
        return SkipReason(plan.skip_reason)
    _report(context, plan)
    day = plan.requested_at.date().isoformat()
    tick = TrendingTick(
        requested_at=plan.requested_at.isoformat(),
        entries=[TrendingEntry(**vars(entry)) for entry in tick_entries(plan)],
    )
    return RunRequest(
        run_key=f"trending:{day}",
        run_config=RunConfig(ops={INTAKE_OP: tick}),
        tags={
            TAG_TRENDING_DATE: day,
            TAG_TRENDING_LIST: plan.listing.source if plan.listing else "",
        },
    )


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
