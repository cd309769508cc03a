from .fleet import refresh_sensor, sources_sensor
from .kafka_injector import kafka_injector_sensor
from .notify import notify_archive_done_sensor, notify_archive_failed_sensor, notify_fleet_sensor
from .reconcile import reconcile_sensor
from .verify import verify_sensor

__all__ = [
    "kafka_injector_sensor",
    "notify_archive_done_sensor",
    "notify_archive_failed_sensor",
    "notify_fleet_sensor",
    "reconcile_sensor",
    "refresh_sensor",
    "sources_sensor",
    "verify_sensor",
]
