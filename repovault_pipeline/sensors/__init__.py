from .fleet import refresh_sensor, sources_sensor
from .kafka_injector import kafka_injector_sensor
from .reconcile import reconcile_sensor
from .verify import verify_sensor

__all__ = [
    "kafka_injector_sensor",
    "reconcile_sensor",
    "refresh_sensor",
    "sources_sensor",
    "verify_sensor",
]
