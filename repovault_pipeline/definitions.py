"""Everything Dagster loads, assembled in one place."""

from dagster import Definitions

from .assets import repo_archive
from .jobs import archive_repo_job
from .resources import KafkaResource, LineageResource, VaultResource
from .schedules import trending_top10_schedule
from .sensors import kafka_injector_sensor, reconcile_sensor, refresh_sensor, sources_sensor

defs = Definitions(
    assets=[repo_archive],
    jobs=[archive_repo_job],
    sensors=[kafka_injector_sensor, reconcile_sensor, sources_sensor, refresh_sensor],
    schedules=[trending_top10_schedule],
    resources={"vault": VaultResource(), "lineage": LineageResource(), "kafka": KafkaResource()},
)
