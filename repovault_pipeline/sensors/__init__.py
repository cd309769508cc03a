from .kafka_injector import kafka_injector_sensor

__all__ = ["kafka_injector_sensor"]
