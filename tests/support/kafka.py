"""Kafka helpers for tests: produce raw values and read a topic back, through kafka-python."""

from __future__ import annotations

import json
import os

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def bootstrap() -> str:
    return os.environ["REPOVAULT_KAFKA_BOOTSTRAP"]


def produce(topic: str, values: list[bytes | None], key: bytes | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=5)
    try:
        for future in [producer.send(topic, key=key, value=v) for v in values]:
            future.get(timeout=10)
    finally:
        producer.close()


def read_all(topic: str, max_wait_s: float = 5.0) -> list:
    """Every record of `topic`, from the beginning to the end as of now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        records: list = []
        import time

        deadline = time.monotonic() + max_wait_s
        while sum(end.values()) > len(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def read_json(topic: str) -> list[dict]:
    return [json.loads(r.value) for r in read_all(topic)]
