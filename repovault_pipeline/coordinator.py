"""`RepoVaultRunCoordinator`: Dagster's run queue, with the tags every archive run needs.

Runs of `repo_archive` launched from the asset page, a backfill, the launchpad or a
re-execution carry no `dagster/max_runtime` nor `repovault/host` unless someone typed them, so
neither run monitoring nor the per-host limit (tag_concurrency_limits) would apply. This
coordinator adds the missing ones when the run is submitted, before it enters the queue; the
instance configs (dagster.yaml, deploy/dagster-dev.yaml) name it. A run that never passes a
coordinator (`dagster asset materialize` executes in its own process) gets them from its first
op instead (assets/archive.py). Loaded by the webserver and the daemon: imports no resource and
reads only the environment's REPOVAULT_RUN_TIMEOUT_S / REPOVAULT_GIT_TIMEOUT_S.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterRun, QueuedRunCoordinator, SubmitRunContext

from .core.common.settings import Settings
from .core.intake.runs import missing_run_tags

ARCHIVE_JOB = "archive_repo_job"
ARCHIVE_ASSET = AssetKey("repo_archive")


def archives(run: DagsterRun) -> bool:
    """Whether the run materializes `repo_archive` (a check-only run archives nothing)."""
    if run.asset_selection is not None:
        return ARCHIVE_ASSET in run.asset_selection
    return run.job_name == ARCHIVE_JOB


class RepoVaultRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that tags archive runs with their host and maximum runtime."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if archives(run):
            missing = missing_run_tags(run.tags, Settings.from_env())
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
        return super().submit_run(context)
