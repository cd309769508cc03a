"""Everything Dagster loads, assembled in one place."""

from dagster import Definitions

from .assets import repo_archive, restorable
from .jobs import archive_repo_job
from .resources import KafkaResource, LineageResource, VaultResource
from .schedules import restore_drill_schedule, trending_top10_schedule
from .sensors import kafka_injector_sensor, reconcile_sensor

defs = Definitions(
    assets=[repo_archive],
    asset_checks=[restorable],
    jobs=[archive_repo_job],
    sensors=[kafka_injector_sensor, reconcile_sensor],
    schedules=[trending_top10_schedule, restore_drill_schedule],
    resources={"vault": VaultResource(), "lineage": LineageResource(), "kafka": KafkaResource()},
)
