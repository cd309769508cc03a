"""Is this evaluation a real tick of the sensor daemon, or a test ("Test sensor" in the UI)?

Evaluating a sensor must change nothing unless the daemon is ticking it (docs/contract.md): the
sensors read and plan on every evaluation, and write (rows, dead letters, offsets, republished
requests) only on a daemon tick. Any other evaluation returns `dry_run(...)`: what a tick would
do, with no run request and the cursor left as it was.
"""

from __future__ import annotations

from dagster import SensorEvaluationContext, SkipReason
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

DRY_RUN = "dry run, nothing written"


def on_daemon_tick(context: SensorEvaluationContext) -> bool:
    """True only while the sensor daemon evaluates this sensor for one of its ticks.

    Dagster has no public flag for it; this relies on two facts of Dagster 1.13's code:
    - the daemon stores the tick (status STARTED) before it evaluates the sensor and passes
      `log_key = [repository, sensor, tick id]` (dagster/_daemon/sensor.py,
      SensorLaunchContext.log_key);
    - "Test sensor" (GraphQL `sensorDryRun`), `dagster sensor preview` and
      `build_sensor_context` pass no log key, and SensorEvaluationContext then makes
      `[repository, sensor, "%Y%m%d_%H%M%S"]`, or none at all.
    So the key must end in the id of a STARTED tick of this very sensor in the instance's
    storage. tests/sensors/test_ticks.py fails when an upgrade of Dagster changes either fact.
    """
    key = context.log_key
    storage = context.instance.schedule_storage if key else None
    if not key or storage is None or not key[-1].isdigit():
        return False
    try:
        tick = storage.get_tick(int(key[-1]))
    except DagsterInvariantViolationError:  # no such tick
        return False
    return (
        tick.instigator_type == InstigatorType.SENSOR
        and tick.instigator_name == context.sensor_name
        and tick.status == TickStatus.STARTED
    )


def dry_run(would: str) -> SkipReason:
    """What a test of the sensor shows: what a daemon tick would do, having done none of it."""
    return SkipReason(f"{DRY_RUN}: {would}")
