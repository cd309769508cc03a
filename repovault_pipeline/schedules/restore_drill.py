"""`restore_drill_schedule`: every repository's latest snapshot is proven restorable once a
week, a seventh of them each day (`core.verify.drill_batch`): one run of `archive_repo_job` per
repository that selects only the check (as "Execute check" in the UI does): nothing is archived."""

from __future__ import annotations

from collections.abc import Iterator

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ..assets import restorable
from ..core.vault.verify import DRILL_DAYS, drill_batch
from ..jobs import archive_repo_job
from ..partitions import REPOSITORIES

DRILL_TAG = "repovault/restore_drill"


@schedule(
    name="restore_drill_schedule",
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=archive_repo_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Daily at 03:00 UTC, a seventh of the repositories: every repository's `restorable` "
        f"check runs once every {DRILL_DAYS} days (a weekly restore drill in daily batches)."
    ),
)
def restore_drill_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest | SkipReason]:
    tick = context.scheduled_execution_time
    day = int(tick.timestamp() // 86400)
    batch = drill_batch(list(context.instance.get_dynamic_partitions(REPOSITORIES)), day)
    if not batch:
        yield SkipReason("no repository falls on today's batch of the restore drill")
        return
    for repo_id in batch:
        yield RunRequest(
            run_key=f"drill-{tick:%Y%m%d}-{repo_id}",
            partition_key=repo_id,
            asset_selection=[],
            asset_check_keys=[restorable.check_key],
            tags={DRILL_TAG: f"{tick:%Y-%m-%d}"},
        )
