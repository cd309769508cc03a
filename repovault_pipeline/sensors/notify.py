"""The notify sensors: what RepoVault tells an operator (`core.notify`) becomes runs of
`notify_job`, one per notification, its key the run key (sent once, however often a tick sees
it). A test of a sensor shows the run requests and launches none: nothing is sent.

- `notify_archive_failed_sensor` and `notify_archive_done_sensor`: Dagster's run-status sensors
  on every run of the code location (archive runs, check runs, asset-page runs): `failed` and
  `partial` from the request's lineage row once the run ended (a run Dagster will retry says
  nothing: its retry does), `unrestorable` from the run's failed `restorable` verdicts. Dagster
  hands a run-status sensor the ended runs in order and stops a tick at the first one with
  something to say, so a tick (every 10 s) tells at most one run's messages.
- `notify_fleet_sensor`: tracked sources whose listing failed (`source_error`, once per
  episode: the sources in error are its cursor) and stale repositories (`stale`, keyed by their
  last check: once per episode).
"""

from __future__ import annotations

import json
import time

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from ..assets import restorable
from ..core.common.settings import Settings
from ..core.intake.runs import TAG_WILL_RETRY, request_of_run
from ..core.lineage.requests import now
from ..core.notify.digest import stale_repositories
from ..core.notify.events import (
    Notification,
    archive_notice,
    source_error_notices,
    stale_notice,
    unrestorable_notice,
    wanted,
)
from ..jobs import NotificationConfig, notify_job
from ..resources import LineageResource, NotifyResource, SourcesResource
from .reconcile import DagsterRuns

TAG_EVENT = "repovault/notify_event"
STALE_BATCH = 20  # stale messages requested a tick; the next ones follow on the next ticks


def notify_runs(notifications: list[Notification], settings: Settings) -> list[RunRequest]:
    """One `notify_job` run per notification whose event is wanted, keyed by its key."""
    return [
        RunRequest(
            run_key=n.key,
            run_config=NotificationConfig.of(n),
            tags={TAG_EVENT: n.event},
        )
        for n in notifications
        if wanted(settings, n.event)
    ]


def _run_ended(
    context: RunStatusSensorContext, lineage: LineageResource, notify: NotifyResource
) -> list[RunRequest] | None:
    """The notifications of one ended run. None when there are none: Dagster then goes on to
    the next ended run in the same tick (it stops at the first run that returns something)."""
    run = context.dagster_run
    settings = notify.settings()
    if not settings.notify_urls or run.job_name == notify_job.name:
        return None  # notifications off: the runs pass, none is kept for later
    failed = run.status == DagsterRunStatus.FAILURE
    if failed and context.instance.run_retries_enabled:
        run = _retry_decided(context.instance, run)
    if run.tags.get(TAG_WILL_RETRY) == "true":
        return None  # a run Dagster will retry: its last attempt is told
    reason = DagsterRuns(context.instance).failure_reason(run.run_id) if failed else None
    row = lineage.store().get(request_of_run(run.tags, run.run_id).request_id)
    notices = [archive_notice(row, run.run_id, reason)]
    for record in context.instance.all_logs(
        run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ):
        check = record.dagster_event.event_specific_data if record.dagster_event else None
        if (
            isinstance(check, AssetCheckEvaluation)
            and check.asset_check_key == restorable.check_key
            and not check.passed
            and check.severity.value == "ERROR"  # WARN: not verified (no key, store down)
        ):
            metadata = {k: str(v.value) for k, v in check.metadata.items()}
            notices.append(unrestorable_notice(check.partition or "", run.run_id, metadata, row))
    return notify_runs([n for n in notices if n is not None], settings) or None


def _retry_decided(instance: DagsterInstance, run: DagsterRun, wait_s: float = 5.0) -> DagsterRun:
    """The failed run with its `dagster/will_retry` tag, which Dagster writes just after the
    failure (run retries on): read again until it is there, so a tick that saw the run in
    between never tells an attempt that will be retried. After `wait_s`, the run as it is."""
    deadline = time.monotonic() + wait_s
    while TAG_WILL_RETRY not in run.tags and time.monotonic() < deadline:
        time.sleep(0.05)
        run = instance.get_run_by_id(run.run_id) or run
    return run


def _run_status_notifier(name: str, status: DagsterRunStatus, description: str):
    """A run-status sensor on the runs that ended with `status`, telling what they ended as."""

    @run_status_sensor(
        name=name,
        run_status=status,
        request_job=notify_job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description=description,
    )
    def notifier(
        context: RunStatusSensorContext, lineage: LineageResource, notify: NotifyResource
    ) -> list[RunRequest] | None:
        return _run_ended(context, lineage, notify)

    return notifier


notify_archive_failed_sensor = _run_status_notifier(
    "notify_archive_failed_sensor",
    DagsterRunStatus.FAILURE,
    "A failed archive run, once it will not be retried: `failed` (reason from its lineage row), "
    "or `partial` when the forge metadata failed after the code was kept. One notify_job run "
    "per failure (run key failed:<request_id>:<run_id>).",
)
notify_archive_done_sensor = _run_status_notifier(
    "notify_archive_done_sensor",
    DagsterRunStatus.SUCCESS,
    "A successful run whose request is `partial` (LFS objects, wiki or metadata missing: "
    "`partial` with its reasons), or whose `restorable` check failed (`unrestorable`: archive "
    "runs, the restore drill, checks asked over the API).",
)


@sensor(
    job=notify_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=300,
    description="Every 5 minutes: a tracked source whose listing failed (`source_error`, once "
    "until it lists again) and repositories not checked for REPOVAULT_REFRESH_INTERVAL_H plus "
    "an hour (`stale`, once per repository until it is checked again, 20 a tick).",
)
def notify_fleet_sensor(
    context: SensorEvaluationContext,
    lineage: LineageResource,
    notify: NotifyResource,
    sources: SourcesResource,
) -> SensorResult | SkipReason:
    settings = notify.settings()
    if not settings.notify_urls:
        return SkipReason("REPOVAULT_NOTIFY_URLS is unset: notifications are off")
    fleet = lineage.fleet()
    tracked = fleet.sources()
    known = set(json.loads(context.cursor or "[]"))
    notices = source_error_notices(tracked, known)
    interval = sources.settings().refresh_interval_h
    if wanted(settings, "stale"):
        stale = stale_repositories(fleet.engine, now(), interval)[:STALE_BATCH]
        notices += [stale_notice(state, interval) for state in stale]
    in_error = sorted(s.source.source_id for s in tracked if s.status == "error")
    runs = notify_runs(notices, settings)
    return SensorResult(
        run_requests=runs,
        cursor=json.dumps(in_error),
        skip_reason=None if runs else "no source in error, no stale repository to tell",
    )
