"""Scale of one asset: 100,000 `repositories` partitions on a Dagster instance (SQLite, as
`make run`) and 100,000 rows of `repo_state` (PostgreSQL at REPOVAULT_TEST_PG, else SQLite):
the cost of registering them, of the lookups the sensors make, of one evaluation of each fleet
sensor when nothing is due, of one injector tick that reads 100 requests (the broker at
REPOVAULT_KAFKA_BOOTSTRAP, default 127.0.0.1:9092), and of the GraphQL query behind the asset's
page in the UI (its partition status), against the project's own workspace.

    python -m benchmarks.partitions [--partitions 100000] [--out benchmarks/PARTITIONS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.run import log
from tests.support.daemon import daemon_tick_context
from tests.support.servers import REPO_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance, SensorDefinition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "PARTITIONS.md")
    args = parser.parse_args(argv)
    from dagster import instance_for_test
    from sqlalchemy import create_engine

    from repovault_pipeline.core.lineage.requests import open_lineage
    from repovault_pipeline.core.sources.fleet import FleetStore
    from repovault_pipeline.definitions import repovault_resources
    from repovault_pipeline.partitions import repositories
    from repovault_pipeline.sensors import kafka_injector_sensor, refresh_sensor, sources_sensor

    admin = os.environ.get(
        "REPOVAULT_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    name = f"repovault_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db_url = f"{admin.rsplit('/', 1)[0]}/{name}"
    os.environ["REPOVAULT_DB_URL"] = db_url
    n = args.partitions
    keys = [f"github.com/org{i // 1000:03d}/repo{i:06d}" for i in range(n)]
    r: dict[str, object] = {"partitions": n}
    try:
        with instance_for_test() as instance:
            t = time.perf_counter()
            for start in range(0, n, 10_000):
                instance.add_dynamic_partitions(repositories.name, keys[start : start + 10_000])
            r["register_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            assert len(instance.get_dynamic_partitions(repositories.name)) == n
            r["list_all_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            for key in keys[:: n // 200]:
                assert instance.has_dynamic_partition(repositories.name, key)
            r["has_partition_ms"] = round((time.perf_counter() - t) * 1000 / 200, 2)

            fleet = FleetStore(open_lineage(db_url).engine)
            now = datetime.now(UTC)
            t = time.perf_counter()
            for start in range(0, n, 10_000):
                fleet.add_repos(
                    "github-org:github.com/bench",
                    [(k, f"https://{k}.git") for k in keys[start : start + 10_000]],
                    now,
                )
            r["repo_state_rows_s"] = round(time.perf_counter() - t, 2)
            for name_, sensor in (
                ("refresh_sensor", refresh_sensor),
                ("sources_sensor", sources_sensor),
            ):
                with daemon_tick_context(
                    instance, sensor.name, "", repovault_resources()
                ) as context:
                    t = time.perf_counter()
                    sensor(context)
                r[f"{name_}_tick_s"] = round(time.perf_counter() - t, 3)
                log(f"{name_}: {r[f'{name_}_tick_s']} s")
            r["injector_tick_s"], r["injector_requests"] = _injector_tick(
                instance, kafka_injector_sensor, repovault_resources
            )
            log(f"injector tick: {r['injector_tick_s']} s for {r['injector_requests']} requests")
            r["asset_page_s"], r["asset_page_partitions"] = _asset_page(instance)
            log(f"asset page query: {r['asset_page_s']} s over {r['asset_page_partitions']}")
    finally:
        open_lineage(db_url).dispose()
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    args.out.write_text(
        f"""# Partitions benchmark

`python -m benchmarks.partitions --partitions {n}`, {datetime.now(UTC):%Y-%m-%d}, on
{os.cpu_count()} cores: a Dagster instance on SQLite (as `make run`; production uses
PostgreSQL) and `repo_state` on PostgreSQL.

| what | time |
| --- | --- |
| register {n} `repositories` partitions (10,000 a call) | {r["register_s"]} s |
| list all of them (`get_dynamic_partitions`) | {r["list_all_s"]} s |
| one `has_dynamic_partition` (fleet sensors: one per run) | {r["has_partition_ms"]} ms |
| {n} `repo_state` rows written by listings (10,000 a call) | {r["repo_state_rows_s"]} s |
| one `refresh_sensor` evaluation with {n} rows, none due | {r["refresh_sensor_tick_s"]} s |
| one `sources_sensor` evaluation, {n} rows, 200 first runs | {r["sources_sensor_tick_s"]} s |
| one injector tick, {r["injector_requests"]} new repositories | {r["injector_tick_s"]} s |
| asset page's status query, {r["asset_page_partitions"]} partitions | {r["asset_page_s"]} s |

```json
{json.dumps(r, indent=1)}
```
"""
    )
    log(f"wrote {args.out}")
    return 0


def _injector_tick(
    instance: DagsterInstance, sensor: SensorDefinition, resources: Callable[[], dict]
) -> tuple[float, int]:
    """One tick that reads 100 requests for repositories not yet partitions: each costs a
    partition lookup, a run request and a lineage row."""
    from repovault_pipeline.core.common.settings import Settings
    from repovault_pipeline.core.intake.kafka import KafkaGateway
    from repovault_pipeline.core.intake.messages import request_message
    from repovault_pipeline.core.lineage.requests import now

    suffix = uuid.uuid4().hex[:8]
    os.environ["REPOVAULT_TOPIC_PENDING"] = f"pendientes-bench-{suffix}"
    os.environ["REPOVAULT_TOPIC_REJECTED"] = f"rechazados-bench-{suffix}"
    settings = Settings.from_env()
    gateway = KafkaGateway(settings)
    try:
        gateway.ensure_topics()
        messages = []
        for i in range(100):
            url = f"https://github.com/new{suffix}/repo{i:03d}.git"
            messages.append((None, request_message(str(uuid.uuid4()), url, "kafka", now())))
        gateway.publish(settings.topics.pending, messages)
    finally:
        gateway.close()
    with daemon_tick_context(instance, sensor.name, None, resources()) as context:
        t = time.perf_counter()
        result = sensor(context)
        elapsed = round(time.perf_counter() - t, 3)
    return elapsed, len(result.run_requests or [])


def _asset_page(instance: DagsterInstance) -> tuple[float, int]:
    """The query the UI's asset page makes for a partitioned asset's status, run against the
    project's workspace (its code server started as `dagster dev` would)."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    query = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
      ... on AssetNode { partitionStats { numPartitions numMaterialized numFailed }
        assetPartitionStatuses {
          ... on DefaultPartitionStatuses { materializedPartitions } } } } }"""
    with define_out_of_process_context(
        str(REPO_ROOT / "workspace.yaml"), None, instance
    ) as context:
        t = time.perf_counter()
        result = execute_dagster_graphql(context, query, {"key": {"path": ["repo_archive"]}})
        elapsed = round(time.perf_counter() - t, 3)
    assert not result.errors, result.errors
    return elapsed, result.data["assetNodeOrError"]["partitionStats"]["numPartitions"]


if __name__ == "__main__":
    sys.exit(main())
