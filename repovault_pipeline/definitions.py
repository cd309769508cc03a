"""Everything Dagster loads, assembled in one place."""

from dagster import Definitions

from .assets import repo_archive, restorable, vault_stats
from .jobs import archive_repo_job
from .resources import KafkaResource, LineageResource, VaultResource
from .schedules import (
    restore_drill_schedule,
    trending_top10_schedule,
    vault_stats_job,
    vault_stats_schedule,
)
from .sensors import kafka_injector_sensor, reconcile_sensor

defs = Definitions(
    assets=[repo_archive, vault_stats],
    asset_checks=[restorable],
    jobs=[archive_repo_job, vault_stats_job],
    sensors=[kafka_injector_sensor, reconcile_sensor],
    schedules=[trending_top10_schedule, restore_drill_schedule, vault_stats_schedule],
    resources={"vault": VaultResource(), "lineage": LineageResource(), "kafka": KafkaResource()},
)
