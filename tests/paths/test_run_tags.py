"""Runs of `repo_archive` launched from the UI (its GraphQL mutations) into `make run`'s run
queue: from the asset page (the implicit asset job, which has no tags of its own) and from
`archive_repo_job`'s launchpad with the URL as a run tag. Both carry `dagster/max_runtime` and
`repovault/host`, and the per-host limit holds the second run of the same git host in the queue
until the first has ended."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dagster import DagsterRunStatus, instance_for_test

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.daemon import daemon_workspace, dequeue, dev_instance_config, wait_until
from tests.support.repos import ServedRepo
from tests.support.ui import launch_run
from tests.support.user_checks import assert_archived_by


def one_run_per_host() -> dict:
    """`make run`'s instance with the per-host limit at 1 (4 by default)."""
    config = dev_instance_config()
    for rule in config["run_coordinator"]["config"]["tag_concurrency_limits"]:
        if rule["key"] == "repovault/host":
            rule["limit"] = 1
    return config


def test_ui_runs_carry_host_and_timeout_and_wait_for_their_host(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    from_asset_page, from_launchpad = make_repo("page"), make_repo("launchpad")
    for repo in (from_asset_page, from_launchpad):
        repo.commit({"README.md": f"{repo.url}\n"})
        repo.push()
    # The asset page clones the URL last recorded; the launchpad run is given its URL.
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    lineage.record_pending(from_asset_page.url, from_asset_page.repo_id, "cli")
    host = from_asset_page.repo_id.split("/")[0]

    with (
        instance_for_test(overrides=one_run_per_host()) as instance,
        daemon_workspace(instance) as workspace,
    ):
        instance.add_dynamic_partitions(
            REPOSITORIES, [from_asset_page.repo_id, from_launchpad.repo_id]
        )
        first = launch_run(
            workspace,
            "__ASSET_JOB",
            from_asset_page.repo_id,
            assets=["repo_archive"],
            checks={"repo_archive": ["restorable"]},
        )
        second = launch_run(
            workspace,
            "archive_repo_job",
            from_launchpad.repo_id,
            tags={"repovault/repo_url": from_launchpad.url},
        )
        for run_id in (first, second):
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == DagsterRunStatus.QUEUED
            assert run.tags["dagster/max_runtime"] == str(Settings.from_env().run_timeout_s)
            assert run.tags["repovault/host"] == host

        dequeue(workspace)
        assert instance.get_run_by_id(first).status != DagsterRunStatus.QUEUED
        assert instance.get_run_by_id(second).status == DagsterRunStatus.QUEUED  # same host

        def ended(run_id: str):
            run = instance.get_run_by_id(run_id)
            return run if run is not None and run.is_finished else None

        wait_until(lambda: ended(first), describe=lambda: f"run {first} did not end")
        dequeue(workspace)
        wait_until(lambda: ended(second), describe=lambda: f"run {second} did not end")
        assert_archived_by(instance, ended(first), from_asset_page, "ui", tmp_path / "a")
        assert_archived_by(instance, ended(second), from_launchpad, "ui", tmp_path / "b")
