"""`on_daemon_tick` on the contexts Dagster builds. An upgrade of Dagster that changes how the
daemon or "Test sensor" call a sensor fails tests/paths/test_sensor_dry_run.py, which goes
through the daemon's own code and the UI's GraphQL mutation, and the dry-run case here."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test
from dagster._core.definitions.sensor_definition import SensorEvaluationContext
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus

from repovault_pipeline.sensors.ticks import on_daemon_tick
from tests.support.daemon import daemon_tick_context

SENSOR = "kafka_injector_sensor"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def test_a_daemon_tick_is_one(instance: DagsterInstance) -> None:
    with daemon_tick_context(instance, SENSOR) as context:
        assert on_daemon_tick(context)


def test_a_test_of_the_sensor_is_not(instance: DagsterInstance) -> None:
    # What "Test sensor" and `dagster sensor preview` build: no log key, so Dagster makes one.
    dry = SensorEvaluationContext(
        instance_ref=None,
        instance=instance,
        log_key=None,
        repository_name="__repository__",
        sensor_name=SENSOR,
    )
    assert re.fullmatch(r"\d{8}_\d{6}", dry.log_key[-1])
    assert not on_daemon_tick(dry)
    assert not on_daemon_tick(build_sensor_context(instance=instance, sensor_name=SENSOR))


def _tick(instance: DagsterInstance, sensor: str, status: TickStatus) -> int:
    data = TickData(
        instigator_origin_id="origin",
        instigator_name=sensor,
        instigator_type=InstigatorType.SENSOR,
        status=status,
        timestamp=time.time(),
        selector_id="selector",
    )
    return instance.create_tick(data).tick_id


@pytest.mark.parametrize(
    ("sensor", "status"),
    [("reconcile_sensor", TickStatus.STARTED), (SENSOR, TickStatus.SKIPPED), (SENSOR, None)],
    ids=["another sensor's tick", "a finished tick", "no such tick"],
)
def test_a_log_key_naming_no_running_tick_of_this_sensor_is_not(
    instance: DagsterInstance, sensor: str, status: TickStatus | None
) -> None:
    tick_id = _tick(instance, sensor, status) if status else 987654
    context = SensorEvaluationContext(
        instance_ref=None,
        instance=instance,
        log_key=["__repository__", SENSOR, str(tick_id)],
        repository_name="__repository__",
        sensor_name=SENSOR,
    )
    assert not on_daemon_tick(context)
