from .kafka_injector import kafka_injector_sensor
from .reconcile import reconcile_sensor

__all__ = ["kafka_injector_sensor", "reconcile_sensor"]
