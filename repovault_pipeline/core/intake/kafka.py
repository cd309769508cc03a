"""Kafka through kafka-python: topic creation, acknowledged publishing, and reading `pendientes`
by explicit partition assignment from positions the caller keeps (the sensor cursor).

Assignment rather than a group subscription: no rebalance to wait for, and the position that
counts is the one the injector stored with its run requests. The consumer group
`repovault-injector` still receives the same offsets, so standard Kafka tools show the lag.

A stored position may point outside its partition's log: past the end after a broker restarted
with an empty log or the topic was recreated, before the start after retention deleted unread
offsets. `read` checks every position before reading, never resets one silently and never
resets a valid one (see `check_position`), and reports each reset for the operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, OffsetOutOfRangeError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from repovault_pipeline.core.common.errors import TransientError
from repovault_pipeline.core.common.settings import Settings

log = logging.getLogger(__name__)

INJECTOR_GROUP = "repovault-injector"
TIMEOUT_MS = 10_000
BOOTSTRAP_TIMEOUT_MS = 5_000  # a broker that is down is reported in seconds, not half a minute


PAST_END = "past_end"
BEFORE_START = "before_start"
RECREATED = "recreated"
_NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"  # what brokers before Kafka 2.8 send
PROBE_WAIT_S = 2.0


class BrokerUnavailable(TransientError):
    """Kafka cannot be reached or refused the request; nothing was acknowledged."""


class TopicMissing(BrokerUnavailable):
    """The topic does not exist (yet, or any more: a broker that restarted with an empty log)."""


def check_position(
    position: int, log_start: int, log_end: int, reaches_position: bool | None = None
) -> str | None:
    """Why reading cannot continue at `position`, or None when it can.

    `log_end` is the end offset the broker reports. Apache Kafka's is exact, but Tansu reports
    the base offset of the last batch + 1, short of the real end after a multi-record batch, so a
    position past the reported end is only out of range once a probe found no record at
    `position - 1` or later (`reaches_position` False); None means not probed yet.
    """
    if position < log_start:
        return BEFORE_START
    if position > log_end and reaches_position is not True:
        return PAST_END
    return None


@dataclass(frozen=True)
class PositionReset:
    """A stored position outside its partition's log, and where reading resumed instead."""

    topic: str
    partition: int
    offset: int  # the stored position
    origin: str  # "sensor cursor" or "group offset"
    cause: str  # PAST_END, BEFORE_START or RECREATED
    log_start: int
    log_end: int  # as the broker reported it
    resumed_at: int

    @property
    def reason(self) -> str:
        """One line for the operator: which partition, which position, what the log holds,
        where reading resumed, and what may have been lost."""
        where = f"{self.topic}[{self.partition}]: {self.origin} position {self.offset}"
        if self.cause == BEFORE_START:
            what = (
                f"is before the start of the log (retention deleted offsets {self.offset}.."
                f"{self.log_start - 1} before they were read; those requests are lost)"
            )
        elif self.cause == RECREATED:
            what = "belongs to an earlier incarnation of the topic (its topic id changed)"
        else:
            what = (
                "is past the end of the log (the broker restarted with an empty log or the "
                "topic was recreated)"
            )
        holds = (
            f"offsets {self.log_start} to {self.log_end - 1}"
            if self.log_end > self.log_start
            else f"no records (next offset {self.log_start})"
        )
        return (
            f"{where} {what}; the log holds {holds} as the broker reports it; reading resumed "
            f"at {self.resumed_at}, the start of the log"
        )


@dataclass
class Batch:
    """Records read from one topic, where each partition continues, the positions that were
    outside the log, and the topic's id (a recreated topic has a new one)."""

    records: list[ConsumerRecord] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)
    resets: list[PositionReset] = field(default_factory=list)
    topic_id: str | None = None


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

    def publish_status(
        self, topic: str, key: str, event: bytes, logger: logging.Logger | None = None
    ) -> bool:
        """Status events are best effort: the lineage row is the record, so a broker outage is
        logged and does not fail the work that succeeded."""
        try:
            self.publish(topic, [(key, event)])
            return True
        except BrokerUnavailable as exc:
            (logger or log).warning(f"status event not published to {topic}: {exc}")
            return False

    def _consumer(self, max_records: int) -> KafkaConsumer:
        return KafkaConsumer(
            **self._config(
                group_id=INJECTOR_GROUP,
                enable_auto_commit=False,
                max_poll_records=max(1, max_records),
                # Never reset a position behind our back: Apache Kafka answers a fetch outside
                # the log with OFFSET_OUT_OF_RANGE, which then reaches `_poll` as an exception.
                auto_offset_reset="none",
                request_timeout_ms=TIMEOUT_MS + 1000,
                fetch_max_wait_ms=200,
            )
        )

    def describe(self, topic: str) -> tuple[list[int], str | None]:
        """The topic's partitions and its id (None from brokers that have no topic ids)."""
        with self._errors(f"describe {topic}"):
            admin = KafkaAdminClient(**self._config(request_timeout_ms=TIMEOUT_MS))
            try:
                metadata = admin.describe_topics([topic])
            finally:
                admin.close()
        found = [t for t in metadata if t.get("name") == topic and not t.get("error_code")]
        if not found or not found[0].get("partitions"):
            raise TopicMissing(f"topic {topic} does not exist; run `repovault init`")
        topic_id = str(found[0].get("topic_id") or "") or None
        return (
            sorted(p["partition_index"] for p in found[0]["partitions"]),
            None if topic_id == _NO_TOPIC_ID else topic_id,
        )

    def read(
        self,
        topic: str,
        positions: dict[int, int],
        max_records: int,
        wait_s: float = 5.0,
        topic_id: str | None = None,
    ) -> Batch:
        """Up to `max_records` records from `positions` on (partitions without a position start
        at the group's committed offset, else at the beginning). `topic_id` is the id the
        positions were read from: when the topic's id differs, every position is reset."""
        partitions, current_id = self.describe(topic)
        with self._errors(f"read {topic}"):
            consumer = self._consumer(max_records)
            try:
                tps = [TopicPartition(topic, p) for p in partitions]
                batch = Batch(topic_id=current_id)
                recreated = bool(topic_id and current_id and topic_id != current_id)
                self._start(consumer, tps, positions, recreated, batch)
                self._poll(consumer, max_records, wait_s, batch)
                return batch
            finally:
                consumer.close(autocommit=False)

    def _start(
        self,
        consumer: KafkaConsumer,
        tps: list[TopicPartition],
        positions: dict[int, int],
        recreated: bool,
        batch: Batch,
    ) -> None:
        """Check every stored position against its partition's log and seek to where reading
        continues: the position itself when it is inside the log, else the log's start."""
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        stored: dict[TopicPartition, tuple[int, str]] = {}
        for tp in tps:
            if tp.partition in positions:
                stored[tp] = (positions[tp.partition], "sensor cursor")
            elif (committed := consumer.committed(tp)) is not None:
                stored[tp] = (committed, "group offset")
        beyond = {tp: offset for tp, (offset, _) in stored.items() if offset > end[tp]}
        reached = self._reaches(consumer, beyond) if beyond and not recreated else set()
        consumer.assign(tps)
        for tp in tps:
            offset, origin = stored.get(tp, (begin[tp], ""))
            if recreated:
                cause = RECREATED if offset != begin[tp] else None
            else:
                cause = check_position(offset, begin[tp], end[tp], tp in reached)
            if cause is not None:
                self._reset(batch, tp, offset, origin, cause, begin[tp], end[tp])
                offset = begin[tp]
            consumer.seek(tp, offset)
            batch.starts[tp.partition] = batch.positions[tp.partition] = offset
        gone = sorted(set(positions) - {tp.partition for tp in tps})
        if gone:
            log.warning("%s: partitions %s of the cursor no longer exist", tps[0].topic, gone)

    def _reaches(
        self, consumer: KafkaConsumer, positions: dict[TopicPartition, int]
    ) -> set[TopicPartition]:
        """The partitions whose log holds a record at `position - 1` or later: a position past
        the end the broker reported is still valid there (Tansu under-reports end offsets)."""
        consumer.assign(list(positions))
        for tp, position in positions.items():
            consumer.seek(tp, position - 1)
        found: set[TopicPartition] = set()
        waiting = set(positions)
        # No early exit on an empty poll: taking a slow answer for "nothing there" would reset
        # a valid position. A log that really ends before the position costs PROBE_WAIT_S.
        deadline = time.monotonic() + PROBE_WAIT_S
        while waiting and time.monotonic() < deadline:
            try:
                polled = consumer.poll(timeout_ms=500)
            except OffsetOutOfRangeError as exc:  # Apache Kafka: nothing there
                gone = set(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else set()
                consumer.pause(*gone)
                waiting -= gone
                continue
            for tp, records in polled.items():
                if tp in waiting and records[-1].offset >= positions[tp] - 1:
                    found.add(tp)
                    waiting.discard(tp)
                    consumer.pause(tp)
        consumer.resume(*consumer.paused())  # pausing outlives the next assign()
        return found

    def _reset(
        self,
        batch: Batch,
        tp: TopicPartition,
        offset: int,
        origin: str,
        cause: str,
        log_start: int,
        log_end: int,
    ) -> None:
        reset = PositionReset(
            tp.topic, tp.partition, offset, origin, cause, log_start, log_end, log_start
        )
        log.warning(reset.reason)
        batch.resets.append(reset)

    def _poll(self, consumer: KafkaConsumer, max_records: int, wait_s: float, batch: Batch) -> None:
        """Read until the batch is full or a poll comes back empty. End offsets are not used:
        some Kafka-protocol brokers (Tansu) under-report them for multi-record batches."""
        deadline = time.monotonic() + wait_s
        while len(batch.records) < max_records and time.monotonic() < deadline:
            try:
                polled = consumer.poll(timeout_ms=500, max_records=max_records - len(batch.records))
            except OffsetOutOfRangeError as exc:
                # The log moved under us since `_start` checked it (retention, a recreated
                # topic): Apache Kafka reports it here; restart those partitions at their start.
                out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                if not out:
                    raise
                begin = consumer.beginning_offsets(list(out))
                end = consumer.end_offsets(list(out))
                for tp, offset in out.items():
                    cause = check_position(offset, begin[tp], end[tp], False) or PAST_END
                    self._reset(batch, tp, offset, "fetch", cause, begin[tp], end[tp])
                    consumer.seek(tp, begin[tp])
                    batch.positions[tp.partition] = begin[tp]
                continue
            if not polled:
                break
            for tp, records in polled.items():
                batch.records.extend(records)
                batch.positions[tp.partition] = records[-1].offset + 1

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

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
