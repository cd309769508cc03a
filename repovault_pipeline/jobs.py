"""Jobs: `archive_repo_job` materializes `repo_archive` partitions and runs their `restorable`
check (a run of the check alone, as the restore drill launches, archives nothing)."""

from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    AssetSelection,
    define_asset_job,
    in_process_executor,
)

from .assets import repo_archive, repo_metadata
from .core.common.settings import Settings
from .partitions import repositories

# In-process: the three ops share the clone on local disk, and a run archives one repository.
# Transient failures are retried by the ops' own retry policy (see assets/archive.py).
# Every run, however launched (sensor, schedule, UI, backfill), carries a maximum runtime
# (`dagster/max_runtime`, REPOVAULT_RUN_TIMEOUT_S): run monitoring fails a run whose worker died
# unseen, which would otherwise hold its repository's place in the queue forever. Job tags are
# fixed when the code location loads, so the setting is read here, from the code server's
# environment.
archive_repo_job = define_asset_job(
    name="archive_repo_job",
    selection=AssetSelection.assets(repo_archive, repo_metadata),
    partitions_def=repositories,
    executor_def=in_process_executor,
    tags={MAX_RUNTIME_SECONDS_TAG: str(Settings.from_env().run_timeout_s)},
    description="Archive one repository (partition = repo_id) into its bucket, then its forge "
    "metadata when it is kept.",
)
