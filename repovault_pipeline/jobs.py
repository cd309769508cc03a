"""Jobs: `archive_repo_job` materializes `repo_archive` partitions."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from .assets import repo_archive
from .partitions import repositories

# In-process: the three ops share the clone on local disk, and a run archives one repository.
# Transient failures are retried by the ops' own retry policy (see assets/archive.py).
archive_repo_job = define_asset_job(
    name="archive_repo_job",
    selection=AssetSelection.assets(repo_archive),
    partitions_def=repositories,
    executor_def=in_process_executor,
    description="Archive one repository (partition = repo_id) into its bucket.",
)
