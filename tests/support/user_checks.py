"""What a user checks after an archive run, through what a user has: the venv's console scripts
run as commands, the run in Dagster's instance, the request's lineage row, the bucket's
manifest, and `repovault restore`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.lineage.requests import open_lineage
from tests.support.repos import ServedRepo, git
from tests.support.vault_checks import read_json


def console(
    script: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """One of the venv's console scripts (`dagster`, `repovault`) in a process of its own, run
    from `cwd` with the test's environment."""
    return subprocess.run(
        [str(Path(sys.executable).with_name(script)), *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_archived_by(
    instance: DagsterInstance, run: DagsterRun, repo: ServedRepo, source: str, dest: Path
) -> None:
    """`run` archived `repo`'s HEAD: the run succeeded, its request's lineage row (of `source`)
    is `completed` with that HEAD and snapshot, the bucket's latest manifest names them, and
    `repovault restore <repo_id> dest` rebuilds a clone at HEAD."""
    failures = [
        record.message
        for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    ]
    assert run.status == DagsterRunStatus.SUCCESS, f"{run.run_id} {run.status}: {failures}"
    assert run.tags["dagster/partition"] == repo.repo_id
    head = repo.head()
    rows = open_lineage(os.environ["REPOVAULT_DB_URL"]).find(repo_id=repo.repo_id)
    [row] = [row for row in rows if row.run_id == run.run_id]
    assert (row.source, row.status, row.head_commit) == (source, "completed", head)

    bucket = bucket_name(repo.repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
    manifest = read_json(bucket, read_json(bucket, "latest.json")["manifest"])
    assert (manifest["repo_id"], manifest["snapshot_id"], manifest["head_commit"]) == (
        repo.repo_id,
        row.snapshot_id,
        head,
    )

    restored = console("repovault", "restore", repo.repo_id, str(dest), cwd=dest.parent)
    assert restored.returncode == 0, restored.stderr
    assert git(dest, "rev-parse", "HEAD") == head
