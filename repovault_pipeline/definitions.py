"""Everything Dagster loads, assembled in one place."""

from dagster import Definitions

from .assets import repo_archive
from .jobs import archive_repo_job
from .resources import LineageResource, VaultResource
from .schedules import trending_top10_schedule

defs = Definitions(
    assets=[repo_archive],
    jobs=[archive_repo_job],
    schedules=[trending_top10_schedule],
    resources={"vault": VaultResource(), "lineage": LineageResource()},
)
