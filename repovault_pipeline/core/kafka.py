"""Kafka through kafka-python: topic creation, acknowledged publishing, and reading `pendientes`
by explicit partition assignment from positions the caller keeps (the sensor cursor).

Assignment rather than a group subscription: no rebalance to wait for, and the position that
counts is the one the injector stored with its run requests. The consumer group
`repovault-injector` still receives the same offsets, so standard Kafka tools show the lag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from .errors import TransientError
from .settings import Settings

log = logging.getLogger(__name__)

INJECTOR_GROUP = "repovault-injector"
TIMEOUT_MS = 10_000
BOOTSTRAP_TIMEOUT_MS = 5_000  # a broker that is down is reported in seconds, not half a minute


class BrokerUnavailable(TransientError):
    """Kafka cannot be reached or refused the request; nothing was acknowledged."""


@dataclass
class Batch:
    """Records read from one topic, and where each partition continues."""

    records: list[ConsumerRecord] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)


class KafkaGateway:
    """One broker connection set per use: cheap to build, closed by `close()`."""

    def __init__(self, settings: Settings, client_id: str = "repovault") -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap.split(",")
        self.client_id = client_id
        self._producer: KafkaProducer | None = None

    def _config(self, **extra: object) -> dict[str, object]:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
            **extra,
        }

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(
                f"cannot {action}: Kafka at {self.settings.kafka_bootstrap} answered "
                f"{type(exc).__name__} {exc}".strip()
                + "; check the broker (make run starts one) or REPOVAULT_KAFKA_BOOTSTRAP"
            ) from exc

    def ensure_topics(self) -> list[str]:
        """Create the four topics that are missing, with the configured partitions; idempotent."""
        topics = self.settings.topics
        with self._errors("create topics"):
            admin = KafkaAdminClient(**self._config(request_timeout_ms=TIMEOUT_MS))
            try:
                missing = [t for t in topics.all() if t not in set(admin.list_topics())]
                for name in missing:
                    # Another process may create it meanwhile: that is as good.
                    with suppress(TopicAlreadyExistsError):
                        admin.create_topics(
                            [NewTopic(name, topics.partitions, topics.replication_factor)]
                        )
            finally:
                admin.close()
        return missing

    def producer(self) -> KafkaProducer:
        if self._producer is None:
            with self._errors("connect a producer"):
                self._producer = KafkaProducer(
                    **self._config(
                        acks="all",
                        retries=3,
                        linger_ms=5,
                        max_block_ms=TIMEOUT_MS,
                        request_timeout_ms=TIMEOUT_MS,
                    )
                )
        return self._producer

    def publish(self, topic: str, messages: Sequence[tuple[str | None, bytes]]) -> None:
        """Send (key, value) pairs and wait until the broker acknowledged every one."""
        if not messages:
            return
        with self._errors(f"publish to {topic}"):
            producer = self.producer()
            futures = [
                producer.send(topic, key=key.encode() if key else None, value=value)
                for key, value in messages
            ]
            producer.flush(timeout=TIMEOUT_MS / 1000)
            for future in futures:
                future.get(timeout=TIMEOUT_MS / 1000)

    def _consumer(self, max_records: int) -> KafkaConsumer:
        return KafkaConsumer(
            **self._config(
                group_id=INJECTOR_GROUP,
                enable_auto_commit=False,
                max_poll_records=max(1, max_records),
                auto_offset_reset="earliest",  # a position past a recreated topic's end restarts it
                request_timeout_ms=TIMEOUT_MS + 1000,
                fetch_max_wait_ms=200,
            )
        )

    def read(
        self, topic: str, positions: dict[int, int], max_records: int, wait_s: float = 5.0
    ) -> Batch:
        """Up to `max_records` records from `positions` on (partitions without a position start
        at the group's committed offset, else at the beginning)."""
        with self._errors(f"read {topic}"):
            consumer = self._consumer(max_records)
            try:
                return self._read(consumer, topic, positions, max_records, wait_s)
            finally:
                consumer.close(autocommit=False)

    def _read(
        self,
        consumer: KafkaConsumer,
        topic: str,
        positions: dict[int, int],
        max_records: int,
        wait_s: float,
    ) -> Batch:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerUnavailable(f"topic {topic} does not exist; run `repovault init`")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        begin = consumer.beginning_offsets(tps)
        batch = Batch()
        for tp in tps:
            start = positions.get(tp.partition)
            if start is None:
                start = consumer.committed(tp) or begin[tp]
            if start < begin[tp]:
                log.warning(
                    "%s[%d]: offsets %d..%d expired before they were read",
                    topic,
                    tp.partition,
                    start,
                    begin[tp] - 1,
                )
                start = begin[tp]
            consumer.seek(tp, start)
            batch.positions[tp.partition] = start
        # Read until the batch is full or a poll comes back empty. End offsets are not used:
        # some Kafka-protocol brokers (Tansu) under-report them for multi-record batches.
        deadline = time.monotonic() + wait_s
        while len(batch.records) < max_records and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=max_records - len(batch.records))
            if not polled:
                break
            for tp, records in polled.items():
                batch.records.extend(records)
                batch.positions[tp.partition] = records[-1].offset + 1
        return batch

    def commit(self, topic: str, positions: dict[int, int]) -> None:
        """Store `positions` as the consumer group's offsets (what lag tools read)."""
        if not positions:
            return
        with self._errors("commit offsets"):
            consumer = self._consumer(1)
            try:
                offsets = {
                    TopicPartition(topic, p): OffsetAndMetadata(offset, "", -1)
                    for p, offset in positions.items()
                }
                consumer.assign(list(offsets))
                consumer.commit(offsets)
            finally:
                consumer.close(autocommit=False)

    def committed(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        with self._errors("read committed offsets"):
            consumer = self._consumer(1)
            try:
                return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
            finally:
                consumer.close(autocommit=False)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
