"""Everything Dagster loads, assembled in one place."""

from __future__ import annotations

import gc

from dagster import Definitions, InMemoryIOManager, in_process_executor

from .assets import IN_MEMORY, repo_archive, repo_metadata, restorable, vault_stats
from .jobs import archive_repo_job, notify_job
from .resources import (
    ApiResource,
    GitResource,
    KafkaResource,
    LineageResource,
    NotifyResource,
    SourcesResource,
    VaultResource,
    VaultS3Resource,
    from_environment,
)
from .schedules import (
    notify_daily_schedule,
    restore_drill_schedule,
    trending_intake_job,
    trending_top10_schedule,
    vault_stats_job,
    vault_stats_schedule,
)
from .sensors import (
    kafka_injector_sensor,
    notify_archive_done_sensor,
    notify_archive_failed_sensor,
    notify_fleet_sensor,
    reconcile_sensor,
    refresh_sensor,
    sources_sensor,
    verify_sensor,
)


def repovault_resources() -> dict[str, object]:
    """The resources every RepoVault run, sensor and schedule uses, their fields the
    environment's variables (`resources.from_environment`)."""
    s3 = from_environment(VaultS3Resource)
    git = from_environment(GitResource)
    sources = from_environment(SourcesResource)
    return {
        IN_MEMORY: InMemoryIOManager(),
        "s3": s3,
        "git": git,
        "sources": sources,
        "vault": from_environment(VaultResource, s3=s3, git=git, sources=sources),
        "lineage": from_environment(LineageResource),
        "kafka": from_environment(KafkaResource),
        "api": from_environment(ApiResource),
        "notify": from_environment(NotifyResource),
    }


defs = Definitions(
    assets=[repo_archive, repo_metadata, vault_stats],
    asset_checks=[restorable],
    jobs=[archive_repo_job, vault_stats_job, trending_intake_job, notify_job],
    sensors=[
        kafka_injector_sensor,
        reconcile_sensor,
        sources_sensor,
        refresh_sensor,
        verify_sensor,
        notify_archive_failed_sensor,
        notify_archive_done_sensor,
        notify_fleet_sensor,
    ],
    schedules=[
        trending_top10_schedule,
        restore_drill_schedule,
        vault_stats_schedule,
        notify_daily_schedule,
    ],
    resources=repovault_resources(),
    # Every run in one process, however it is launched: `archive_repo_job`, and the implicit
    # asset job of the asset page's Materialize button and of backfills, which would otherwise
    # take the multiprocess executor and run each op in a process of its own, where
    # `upload_snapshot` cannot find the in-memory output of `clone_repo` (IN_MEMORY).
    executor=in_process_executor,
)

# What is loaded by now (Dagster, boto3, our modules: some 280,000 objects) lives as long as the
# process. Frozen, it is left out of every later garbage collection: in a run, each full
# collection walked it for 0.15-0.2 s (benchmarks/README.md note 13).
gc.freeze()
