"""One daemon tick of the injector sensor against the test's broker and lineage database."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult

from repovault_pipeline.resources import KafkaResource, LineageResource
from repovault_pipeline.sensors import kafka_injector_sensor
from tests.support.daemon import daemon_tick_context


def injector_tick(instance: DagsterInstance, cursor: str | None = None) -> SensorResult:
    with daemon_tick_context(
        instance,
        "kafka_injector_sensor",
        cursor,
        {"kafka": KafkaResource(), "lineage": LineageResource()},
    ) as context:
        result = kafka_injector_sensor(context)
    assert isinstance(result, SensorResult)
    return result
