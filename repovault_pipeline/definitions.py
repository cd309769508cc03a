"""Everything Dagster loads, assembled in one place."""

from __future__ import annotations

from dagster import Definitions, EnvVar, InMemoryIOManager, in_process_executor

from .assets import IN_MEMORY, repo_archive, repo_metadata, restorable, vault_stats
from .jobs import archive_repo_job
from .resources import KafkaResource, LineageResource, VaultResource, VaultS3Resource
from .schedules import (
    restore_drill_schedule,
    trending_intake_job,
    trending_top10_schedule,
    vault_stats_job,
    vault_stats_schedule,
)
from .sensors import (
    kafka_injector_sensor,
    reconcile_sensor,
    refresh_sensor,
    sources_sensor,
    verify_sensor,
)


def _env(name: str) -> str | None:
    """`EnvVar(name)` when the variable is set where the code location loads: the UI shows
    its name, never its value, and runs read it when they start. Unset, the field stays None
    and the resource takes the default of `core.settings.Settings`."""
    return EnvVar(name) if EnvVar(name).get_value() is not None else None


def repovault_resources() -> dict[str, object]:
    """The resources every RepoVault run, sensor and schedule uses, configured from the
    environment."""
    s3 = VaultS3Resource(
        endpoint_url=_env("REPOVAULT_S3_ENDPOINT"),
        region_name=_env("AWS_REGION"),
        aws_access_key_id=_env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
    )
    return {
        IN_MEMORY: InMemoryIOManager(),
        "s3": s3,
        "vault": VaultResource(
            s3=s3,
            bucket_prefix=_env("REPOVAULT_BUCKET_PREFIX"),
            local_store=_env("REPOVAULT_LOCAL_STORE"),
        ),
        "lineage": LineageResource(db_url=_env("REPOVAULT_DB_URL")),
        "kafka": KafkaResource(
            bootstrap=_env("REPOVAULT_KAFKA_BOOTSTRAP"),
            topic_pending=_env("REPOVAULT_TOPIC_PENDING"),
            topic_in_progress=_env("REPOVAULT_TOPIC_IN_PROGRESS"),
            topic_completed=_env("REPOVAULT_TOPIC_COMPLETED"),
            topic_rejected=_env("REPOVAULT_TOPIC_REJECTED"),
        ),
    }


defs = Definitions(
    assets=[repo_archive, repo_metadata, vault_stats],
    asset_checks=[restorable],
    jobs=[archive_repo_job, vault_stats_job, trending_intake_job],
    sensors=[
        kafka_injector_sensor,
        reconcile_sensor,
        sources_sensor,
        refresh_sensor,
        verify_sensor,
    ],
    schedules=[trending_top10_schedule, restore_drill_schedule, vault_stats_schedule],
    resources=repovault_resources(),
    # Every run in one process, however it is launched: `archive_repo_job`, and the implicit
    # asset job of the asset page's Materialize button and of backfills, which would otherwise
    # take the multiprocess executor and run each op in a process of its own, where
    # `upload_snapshot` cannot find the in-memory output of `clone_repo` (IN_MEMORY).
    executor=in_process_executor,
)
