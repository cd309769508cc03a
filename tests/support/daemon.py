"""Drive the Dagster daemon's own code from a test: sensor and schedule ticks, backfills, the run
queue, run monitoring, against a code server loaded from `repovault_pipeline.definitions`
(started with the test's environment, so it talks to the same servers)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from dagster import (
    DagsterInstance,
    DagsterRun,
    QueuedRunCoordinator,
    SensorEvaluationContext,
)
from dagster._core.definitions.instigation_logger import get_instigation_log_records
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, PartitionBackfill
from dagster._core.execution.build_resources import wrap_resources_for_execution
from dagster._core.scheduler.instigation import (
    InstigatorTick,
    InstigatorType,
    TickData,
    TickStatus,
)
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._scheduler.scheduler import launch_scheduled_runs
from dagster._time import get_current_datetime

from tests.support.servers import REPO_ROOT

LOG = logging.getLogger("test-daemon")
# Runs go straight to the default launcher (a run worker process through the code server).
LAUNCH_AT_ONCE = {
    "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
}
# Runs wait in the queue: nothing dequeues them unless a test runs the coordinator's iteration.
QUEUED = {
    "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
}


def dev_instance_config() -> dict[str, Any]:
    """The run queue and monitoring settings of `make run`'s instance (deploy/dagster-dev.yaml)."""
    return yaml.safe_load((REPO_ROOT / "deploy" / "dagster-dev.yaml").read_text())


@contextmanager
def daemon_workspace(instance: DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    target = ModuleTarget(
        module_name="repovault_pipeline.definitions",
        attribute=None,
        working_directory=str(REPO_ROOT),
        location_name="repovault",
    )
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


@contextmanager
def clock_ahead(seconds: float) -> Iterator[None]:
    """Dagster's clock in this process (the daemon's) `seconds` ahead of the wall clock, still
    running: a sensor's minimum interval or a run's maximum runtime has passed without waiting
    for it. Processes the daemon starts (code server, run workers) keep the real time."""
    if not seconds:
        yield
        return

    def timestamp() -> float:
        return time.time() + seconds

    with (
        mock.patch("dagster._time._mockable_get_current_timestamp", side_effect=timestamp),
        mock.patch(
            "dagster._time._mockable_get_current_datetime",
            side_effect=lambda: datetime.fromtimestamp(timestamp(), UTC),
        ),
    ):
        yield


def sensor_tick(
    context: WorkspaceProcessContext,
    sensor: str,
    crash_after: str | None = None,
    after_s: float = 0,
):
    """One iteration of the sensor daemon, with every other sensor stopped: the daemon evaluates
    every running sensor that is due, and a test asks for the ticks of one. `after_s`: as if
    that many seconds had passed since the test started (`clock_ahead`); successive ticks of a
    sensor with a minimum interval pass growing values. Fails when the daemon did not evaluate
    the sensor (not due yet): a test of what a tick does must not pass on a tick that never ran."""
    for other in _repository(context).get_sensors():
        if other.name != sensor:
            context.instance.stop_sensor(other.get_remote_origin_id(), other.selector_id, other)
        elif (
            state := context.instance.get_instigator_state(
                other.get_remote_origin_id(), other.selector_id
            )
        ) is not None and not state.is_running:
            context.instance.start_sensor(other)  # stopped by an earlier tick of another sensor
    flags = {sensor: {crash_after: Exception("simulated daemon crash")}} if crash_after else None
    before = _latest_tick(context, sensor)
    with clock_ahead(after_s):
        list(execute_sensor_iteration(context, LOG, None, None, debug_crash_flags=flags))
    assert _latest_tick(context, sensor) != before, f"{sensor} was not due: no tick ran"


@contextmanager
def daemon_tick_context(
    instance: DagsterInstance,
    sensor: str,
    cursor: str | None = None,
    resources: Mapping[str, object] | None = None,
) -> Iterator[SensorEvaluationContext]:
    """The context the sensor daemon gives `sensor` on a tick (its STARTED tick stored, the
    tick's id ending the log key), for a test that calls the sensor's function itself; the
    tick ends when the context does. (`build_sensor_context` gives the context of a test of the
    sensor: a dry run.)"""
    tick = instance.create_tick(
        TickData(
            instigator_origin_id=f"test-{sensor}",
            instigator_name=sensor,
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.STARTED,
            timestamp=time.time(),
            selector_id=f"test-{sensor}",
        )
    )
    try:
        with SensorEvaluationContext(
            instance_ref=None,
            instance=instance,
            cursor=cursor,
            log_key=["__repository__", sensor, str(tick.tick_id)],
            repository_name="__repository__",
            sensor_name=sensor,
            resources=wrap_resources_for_execution(resources),
        ) as context:
            yield context
    finally:
        instance.update_tick(tick.with_status(TickStatus.SUCCESS))


def _latest_tick(context: WorkspaceProcessContext, name: str) -> tuple[int, str] | None:
    """The newest tick's id and status: a new tick, or a crashed one resumed, changes it."""
    sensor = remote_sensor(context, name)
    ticks = context.instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id, limit=1)
    return (ticks[0].tick_id, ticks[0].status.value) if ticks else None


def schedule_ticks(
    context: WorkspaceProcessContext, schedule: str, times: Sequence[datetime]
) -> None:
    """Iterations of the scheduler daemon with the clock at each of `times` (the first one finds
    the schedule, the next ones tick it when a cron time has passed), every other schedule
    stopped."""
    for other in _repository(context).get_schedules():
        if other.name != schedule:
            context.instance.stop_schedule(other.get_remote_origin_id(), other.selector_id, other)
    iteration_times: dict = {}
    for at in times:
        with freeze_time(at):
            list(launch_scheduled_runs(context, LOG, get_current_datetime(), iteration_times))


def schedule_ticks_of(context: WorkspaceProcessContext, name: str) -> list[InstigatorTick]:
    """The schedule's ticks, newest first, as its page in the UI lists them."""
    schedule = _repository(context).get_schedule(name)
    return context.instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)


def run_backfill(
    context: WorkspaceProcessContext, backfill_id: str, timeout: float = 120
) -> PartitionBackfill:
    """Iterations of the backfill daemon (it submits the runs, then follows them), and of the
    run queue's when the instance queues runs, until the backfill ends; returns it."""
    queued = isinstance(context.instance.run_coordinator, QueuedRunCoordinator)

    def ended() -> PartitionBackfill | None:
        list(execute_backfill_iteration(context, LOG))
        if queued:
            dequeue(context)
        backfill = context.instance.get_backfill(backfill_id)
        assert backfill is not None, backfill_id
        return backfill if backfill.status in BULK_ACTION_TERMINAL_STATUSES else None

    return wait_until(
        ended,
        timeout,
        lambda: (
            f"backfill {backfill_id} did not end: "
            f"{[(r.run_id, r.status) for r in context.instance.get_runs()]}"
        ),
    )


def dequeue(context: WorkspaceProcessContext) -> None:
    """One iteration of the queued-run coordinator daemon."""
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as coordinator:
        list(coordinator.run_iteration(context))


def monitor_runs(context: WorkspaceProcessContext, after_s: float = 0) -> None:
    """One iteration of the run monitoring daemon, `after_s` seconds later (`clock_ahead`)."""
    with clock_ahead(after_s):
        list(execute_run_monitoring_iteration(context, LOG))


def remote_sensor(context: WorkspaceProcessContext, name: str):
    return _repository(context).get_sensor(name)


def _repository(context: WorkspaceProcessContext):
    location = context.create_request_context().get_code_location("repovault")
    [repository] = location.get_repositories().values()
    return repository


def sensor_cursor(context: WorkspaceProcessContext, name: str) -> str | None:
    sensor = remote_sensor(context, name)
    state = context.instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
    return state.instigator_data.cursor if state and state.instigator_data else None


def last_tick_log(context: WorkspaceProcessContext, name: str) -> list[dict]:
    """The log records of the sensor's latest tick, as the UI shows them."""
    sensor = remote_sensor(context, name)
    [tick] = context.instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id, limit=1)
    assert tick.log_key, f"tick {tick.tick_id} has no log: {tick.status} {tick.error}"
    return list(get_instigation_log_records(context.instance, tick.log_key))


def wait_for_runs(instance: DagsterInstance, count: int, timeout: float = 120) -> list[DagsterRun]:
    """Wait until `count` runs exist and every one has finished."""
    return wait_until(
        lambda: (
            (runs := instance.get_runs())
            and len(runs) >= count
            and all(r.is_finished for r in runs)
            and runs
        ),
        timeout,
        lambda: f"runs did not finish: {[(r.run_id, r.status) for r in instance.get_runs()]}",
    )


def wait_until(condition, timeout: float = 120, describe=lambda: "condition not met") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(describe())


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int:
    """The pid of the process executing the run, from its "Started process" engine event."""
    for record in instance.all_logs(run_id):
        if record.message.startswith("Started process for run (pid: "):
            return int(record.message.split("pid: ")[1].rstrip(")."))
    raise AssertionError(f"run {run_id} has no run worker yet")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 30)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
