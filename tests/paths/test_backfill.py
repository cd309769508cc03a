"""A backfill of `repo_archive` launched as the asset page launches it (the UI's GraphQL
mutation), run by the backfill daemon's own code through `make run`'s run queue: runs of the
implicit asset job, tagged with their host and maximum runtime, launched into run worker
processes through the code server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dagster import instance_for_test
from dagster._core.execution.backfill import BulkActionStatus

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.daemon import daemon_workspace, dev_instance_config, run_backfill
from tests.support.repos import ServedRepo
from tests.support.ui import launch_asset_backfill
from tests.support.user_checks import assert_archived_by


def test_backfill_of_two_partitions_from_the_asset_page(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repos = []
    for name in ("backfill-a", "backfill-b"):
        repo = make_repo(name)
        repo.commit({"README.md": f"{name}\n"})
        repo.push()
        repos.append(repo)
        # A backfill's runs carry no URL: each clones the one last recorded for its repo_id.
        open_lineage(vault_env["REPOVAULT_DB_URL"]).record_pending(repo.url, repo.repo_id, "cli")
    keys = [repo.repo_id for repo in repos]

    with (
        instance_for_test(overrides=dev_instance_config()) as instance,
        daemon_workspace(instance) as workspace,
    ):
        instance.add_dynamic_partitions(REPOSITORIES, keys)
        backfill_id = launch_asset_backfill(workspace, "repo_archive", keys)
        backfill = run_backfill(workspace, backfill_id)
        runs = {run.tags["dagster/partition"]: run for run in instance.get_runs()}

        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, [
            (key, run.status) for key, run in runs.items()
        ]
        assert sorted(runs) == sorted(keys)
        for repo in repos:
            run = runs[repo.repo_id]
            assert (run.job_name, run.tags["dagster/backfill"]) == ("__ASSET_JOB", backfill_id)
            assert run.tags["dagster/max_runtime"] == str(Settings.from_env().run_timeout_s)
            assert run.tags["repovault/host"] == repo.repo_id.split("/")[0]
            assert_archived_by(
                instance, run, repo, "backfill", tmp_path / f"restored-{repo.bare.stem}"
            )
