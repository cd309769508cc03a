"""`verify_sensor`: the checks asked for over the API (`core.verifications`) become runs of the
`restorable` asset check, one run per check (run key `verify:<id>`), as the restore drill
launches them; checks whose run ended without a verdict are closed with the run's reason."""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ..assets import restorable
from ..core.intake.runs import TAG_VERIFY_ID, TAG_VERIFY_SNAPSHOT
from ..core.lineage.verifications import Verification, VerifyQueue
from ..jobs import archive_repo_job
from ..partitions import REPOSITORIES
from ..resources import LineageResource
from .reconcile import DagsterRuns
from .ticks import dry_run, on_daemon_tick

_ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _run_request(check: Verification) -> RunRequest:
    tags = {TAG_VERIFY_ID: check.verify_id}
    if check.snapshot_id:
        tags[TAG_VERIFY_SNAPSHOT] = check.snapshot_id
    return RunRequest(
        run_key=f"verify:{check.verify_id}",
        partition_key=check.repo_id,
        asset_selection=[],
        asset_check_keys=[restorable.check_key],
        tags=tags,
    )


@sensor(
    job=archive_repo_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Runs the `restorable` check of each repository a caller of the HTTP API asked "
    "to verify (POST /api/repositories/{repo_id}/verify), one run per check, and closes a "
    "check whose run ended without a verdict with the run's reason. Testing it only reads and "
    "says what a tick would do.",
)
def verify_sensor(
    context: SensorEvaluationContext, lineage: LineageResource
) -> SensorResult | SkipReason:
    queue = VerifyQueue(lineage.store().engine)
    queued = queue.with_status("queued")
    if not on_daemon_tick(context):
        return dry_run(f"request {len(queued)} check runs")
    running = queue.with_status("running")
    if not (queued or running):  # the usual tick: no partition list read, no run looked up
        return SkipReason("0 check runs requested, 0 checks closed without a verdict")
    runs = DagsterRuns(context.instance)
    closed = 0
    for check in running:
        found = context.instance.get_runs(
            RunsFilter(tags={TAG_VERIFY_ID: check.verify_id}), limit=1
        )
        if not found:
            continue  # its run request is still being turned into a run
        run = found[0]
        if run.status in _ENDED:
            reason = runs.failure_reason(run.run_id) or f"the run ended {run.status.value}"
            queue.fail(check.verify_id, f"run {run.run_id} ended without a verdict: {reason}")
            closed += 1
    known = set(context.instance.get_dynamic_partitions(REPOSITORIES))
    for check in [c for c in queued if c.repo_id not in known]:
        queue.fail(check.verify_id, f"{check.repo_id} is not a repository Dagster knows")
        closed += 1
    queued = [c for c in queued if c.repo_id in known]
    queue.started([c.verify_id for c in queued])
    summary = f"{len(queued)} check runs requested, {closed} checks closed without a verdict"
    context.log.info(summary)
    return SensorResult(
        run_requests=[_run_request(c) for c in queued], skip_reason=None if queued else summary
    )
