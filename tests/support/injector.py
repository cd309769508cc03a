"""One tick of the injector sensor against the test's broker and lineage database."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult, build_sensor_context

from repovault_pipeline.resources import KafkaResource, LineageResource
from repovault_pipeline.sensors import kafka_injector_sensor


def injector_tick(instance: DagsterInstance, cursor: str | None = None) -> SensorResult:
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"kafka": KafkaResource(), "lineage": LineageResource()},
    ) as context:
        result = kafka_injector_sensor(context)
    assert isinstance(result, SensorResult)
    return result
