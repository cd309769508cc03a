"""`dagster asset materialize` of `repo_archive`, as an operator types it: the implicit asset job
the asset page's Materialize button also runs, in a process of its own, from outside the
repository, against the instance of DAGSTER_HOME."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dagster import instance_for_test

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.repos import ServedRepo
from tests.support.user_checks import assert_archived_by, console


def test_materialize_a_partition_from_the_command_line(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("materialized")
    repo.commit({"README.md": "from the command line\n", "src/app.py": "print(1)\n"})
    repo.push()
    # `dagster asset materialize` takes no run tags: the run clones the URL last recorded for
    # its repo_id (docs/contract.md, Repository identity).
    open_lineage(vault_env["REPOVAULT_DB_URL"]).record_pending(repo.url, repo.repo_id, "cli")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    with instance_for_test(temp_dir=vault_env["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions(REPOSITORIES, [repo.repo_id])
        done = console(
            "dagster",
            "asset",
            "materialize",
            "-m",
            "repovault_pipeline.definitions",
            "--select",
            "repo_archive",
            "--partition",
            repo.repo_id,
            cwd=elsewhere,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        [run] = instance.get_runs()
        assert run.job_name == "__ASSET_JOB"  # the asset page's job, not archive_repo_job
        # Never queued, so its first op tagged it: run monitoring and the host count see it.
        assert run.tags["dagster/max_runtime"] == str(Settings.from_env().run_timeout_s)
        assert run.tags["repovault/host"] == repo.repo_id.split("/")[0]
        assert_archived_by(instance, run, repo, "ui", tmp_path / "restored")
