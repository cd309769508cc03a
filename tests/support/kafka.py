"""Kafka helpers for tests: produce raw values and read a topic back, through kafka-python."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from repovault_pipeline import devbroker
from tests.support.servers import ServerDidNotStart, start_listening, wait_for_listener


def bootstrap() -> str:
    return os.environ["REPOVAULT_KAFKA_BOOTSTRAP"]


def speaks_kafka(address: str, timeout_s: float = 5.0) -> bool:
    """Whether `address` answers Kafka's ApiVersions and Metadata requests (not merely accepts
    connections)."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address,
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def produce(
    topic: str, values: list[bytes | None], key: bytes | None = None, partition: int | None = None
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=5)
    try:
        for future in [producer.send(topic, key=key, value=v, partition=partition) for v in values]:
            future.get(timeout=10)
    finally:
        producer.close()


def read_all(topic: str, quiet_s: float = 1.0) -> list:
    """Every record of `topic` from the beginning, in partition order, until the topic has been
    quiet for `quiet_s` (end offsets are not trusted: Tansu under-reports them)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records: list = []
        while polled := consumer.poll(timeout_ms=int(quiet_s * 1000)):
            for batch in polled.values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_json(topic: str) -> list[dict]:
    return [json.loads(r.value) for r in read_all(topic)]


def dead_letters(topic: str, quiet_s: float = 1.0) -> list[dict]:
    """The `rechazados` records of `topic`, in the order of the records they announce (they are
    keyed by that record's position, so they spread over the partitions of `rechazados`)."""
    letters = [json.loads(r.value) for r in read_all(topic, quiet_s)]
    return sorted(letters, key=lambda d: (d["topic"], d["partition"], d["offset"]))


class OwnBroker:
    """A Tansu broker of the test's own on a free port (memory storage), which the test may kill
    and start again empty: the shared broker on 9092 is never restarted."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc, self.port = start_listening(self._start)

    def _start(self, port: int) -> subprocess.Popen:
        try:
            return devbroker.start("127.0.0.1", port, self.log)
        except SystemExit as exc:  # it exited before listening: the port was taken
            raise ServerDidNotStart(str(exc)) from None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restart_empty(self) -> None:
        """SIGKILL the broker and start a fresh one on the same port: every log is empty."""
        self.stop()
        self.proc = self._start(self.port)
        wait_for_listener(self.proc, self.port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
