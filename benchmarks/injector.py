"""Injector throughput: `python -m benchmarks.injector MESSAGES BASE_URL`, in its own process.

Fills `pendientes` with MESSAGES valid requests (SPEC JSON, one repository each), then evaluates
`kafka_injector_sensor` tick after tick, as the daemon would, until every message has become a
run request. Timed per tick: the sensor evaluation (read a batch, validate, record lineage,
build run requests). The dynamic-partition registration the daemon then applies for the tick
is timed apart; launching the runs is the daemon's and the run queue's work and is not part of
the injector, so it is not done here.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from dagster import SensorResult, instance_for_test

from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.messages import request_message
from repovault_pipeline.core.lineage.requests import now
from repovault_pipeline.partitions import repositories
from repovault_pipeline.resources import KafkaResource, LineageResource
from repovault_pipeline.sensors import kafka_injector_sensor
from tests.support.daemon import daemon_tick_context

from .memory import mb

PRODUCE_CHUNK = 1000


@dataclass
class InjectorResult:
    messages: int
    run_requests: int
    ticks: int
    batch: int
    produce_s: float
    tick_s_total: float
    tick_s_max: float
    tick_s_median: float
    messages_per_s: float
    partitions_s_total: float
    rss_mb: float


def fill(settings: Settings, count: int, base_url: str) -> float:
    """Publish `count` valid requests to `pendientes`; returns the seconds it took."""
    gateway = KafkaGateway(settings, client_id="repovault-bench")
    started = time.perf_counter()
    try:
        gateway.ensure_topics()
        for first in range(0, count, PRODUCE_CHUNK):
            messages = []
            for i in range(first, min(count, first + PRODUCE_CHUNK)):
                url = f"{base_url}/injector/repo{i:05d}.git"
                ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
                value = request_message(f"bench-{i:05d}", ref.url, "kafka", now())
                messages.append((ref.repo_id, value))
            gateway.publish(settings.topics.pending, messages)
    finally:
        gateway.close()
    return time.perf_counter() - started


def drain(count: int, max_empty_ticks: int = 3) -> tuple[list[float], float, int]:
    """Tick the sensor until `count` run requests came out (or it stays empty); returns the
    tick durations, the partition-registration seconds and the run requests."""
    ticks: list[float] = []
    partitions_s = 0.0
    requested = 0
    empty = 0
    cursor = None
    resources = {"kafka": KafkaResource(), "lineage": LineageResource()}
    with instance_for_test() as instance:
        while requested < count and empty < max_empty_ticks:
            started = time.perf_counter()
            # As the daemon ticks it: a context without its STARTED tick is a dry run.
            with daemon_tick_context(
                instance, kafka_injector_sensor.name, cursor, resources
            ) as context:
                result = kafka_injector_sensor(context)
            assert isinstance(result, SensorResult), result
            ticks.append(time.perf_counter() - started)
            cursor = result.cursor
            requested += len(result.run_requests or [])
            empty = 0 if result.run_requests else empty + 1
            started = time.perf_counter()
            for request in result.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(repositories.name, list(request.partition_keys))
            partitions_s += time.perf_counter() - started
    return ticks, partitions_s, requested


def main(argv: list[str]) -> int:
    count, base_url = int(argv[0]), argv[1]
    settings = Settings.from_env()
    produce_s = fill(settings, count, base_url)
    ticks, partitions_s, requested = drain(count)
    total = sum(ticks)
    result = InjectorResult(
        messages=count,
        run_requests=requested,
        ticks=len(ticks),
        batch=settings.injector_batch,
        produce_s=round(produce_s, 2),
        tick_s_total=round(total, 2),
        tick_s_max=round(max(ticks), 3),
        tick_s_median=round(statistics.median(ticks), 3),
        messages_per_s=round(requested / total, 1) if total else 0.0,
        partitions_s_total=round(partitions_s, 2),
        rss_mb=mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
    )
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
