"""`reconcile_sensor`: every request in `repo_requests` ends (docs/contract.md, "Tables"), even
when the run that should have closed it could not. The work is `core.reconcile`; this module
lets it see Dagster's runs through the `RunHistory` protocol."""

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._utils.error import SerializableErrorInfo

from ..core.intake.reconcile import Reconciler, ReconcileState
from ..core.intake.runs import TAG_REQUEST_ID, RecordedOutcome
from ..resources import KafkaResource, LineageResource, VaultResource
from .ticks import dry_run, on_daemon_tick

_FAILURE_EVENTS = {
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.RUN_CANCELING,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.ENGINE_EVENT,
}
_CRASH_PREFIX = "Run execution process for"  # the code server saw the run worker die
_SAYS_NOTHING = (  # what Dagster adds to every failure or termination
    "Sending run termination request",
    "This run has been marked as failed from outside the execution context",
    "This job is being forcibly marked as failed",
)


class DagsterRuns:
    """`core.intake.runs.RunHistory` on a Dagster instance: run records and event log."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance

    def status(self, run_id: str) -> str | None:
        run = self.instance.get_run_by_id(run_id)
        return run.status.value if run else None

    def recorded_outcome(self, run_id: str) -> RecordedOutcome | None:
        for record in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_OUTPUT):
            event = record.dagster_event
            if event and (event.step_key or "").rsplit(".", 1)[-1] == "upload_snapshot":
                metadata = event.step_output_data.metadata
                return RecordedOutcome.from_metadata({k: v.value for k, v in metadata.items()})
        return None

    def failure_reason(self, run_id: str) -> str | None:
        """The failed step's reason, else what ended the run (a crash, a timeout)."""
        reasons: list[str] = []
        for record in self.instance.all_logs(run_id, of_type=_FAILURE_EVENTS):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_FAILURE:
                data = event.step_failure_data
                described = data.user_failure_data.description if data.user_failure_data else None
                reasons.append(f"step {event.step_key} failed: {described or _root(data.error)}")
            elif event.event_type != DagsterEventType.ENGINE_EVENT or (
                record.message or ""
            ).startswith(_CRASH_PREFIX):
                reasons.append(record.message or event.message or "")
        said = [r.strip().rstrip(".") for r in reasons if r and r.strip()]
        telling = [r for r in said if not r.startswith(_SAYS_NOTHING)] or said
        return "; ".join(dict.fromkeys(telling)) or None

    def runs_of_request(self, request_id: str) -> list[str]:
        return list(
            self.instance.get_run_ids(RunsFilter(tags={TAG_REQUEST_ID: request_id}), limit=10)
        )

    def fail(self, run_id: str, reason: str) -> None:
        """As run monitoring fails a run past its maximum runtime: a RUN_FAILURE event, which
        frees its place in the run queue (its worker is gone: there is nothing to terminate)."""
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_failed(
                run,
                reason,
                JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
            )


def _root(error: SerializableErrorInfo | None) -> str:
    """The innermost cause: Dagster wraps the op's own exception in its own."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error else "unknown error"


@sensor(
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Every request ends: closes `in_progress` requests whose run ended without "
    "closing them (a killed worker, the lineage database down), from the committed snapshot "
    "or the run's recorded outcome or failure; fails started runs whose bucket lease went "
    "REPOVAULT_ORPHAN_AFTER_TTLS TTLs unrenewed (their worker is gone); publishes `pending` "
    "requests that never became a run again to `pendientes` (REPOVAULT_REPUBLISH_AFTER_S), "
    "and fails them after 3 tries. "
    "Testing it only reads and says what a tick would do.",
)
def reconcile_sensor(
    context: SensorEvaluationContext,
    vault: VaultResource,
    lineage: LineageResource,
    kafka: KafkaResource,
) -> SensorResult | SkipReason:
    reconciler = Reconciler(
        lineage.store(), DagsterRuns(context.instance), vault.store(), kafka.gateway(), context.log
    )
    plan = reconciler.plan(ReconcileState.load(context.cursor))
    if not on_daemon_tick(context):
        return dry_run(plan.preview())
    report = reconciler.apply(plan)
    context.log.info(report.summary())
    return SensorResult(cursor=plan.state.dump(), skip_reason=report.summary())
