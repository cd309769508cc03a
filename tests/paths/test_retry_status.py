"""A partition added in the UI, with no URL known, whose clone fails for a transient reason:
while the run waits to retry, `repovault status` says which attempt failed, why, and how to give
the partition its URL, instead of `in_progress` with no error. Launched as `dagster asset
materialize` (the asset page's job), the retry delay long enough to look at the row; the test
waits on the row, then stops the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster import instance_for_test

from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.lineage.rows import Request
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.daemon import wait_until
from tests.support.user_checks import console


def test_a_retrying_clone_shows_its_reason_in_status(
    vault_env: dict[str, str],
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Nothing listens there: https://<repo_id>.git cannot be reached (a host that is down).
    repo_id = f"127.0.0.1:{closed_port}/team{uuid.uuid4().hex[:8]}/app"
    monkeypatch.setenv("REPOVAULT_RETRY_DELAY_S", "600")  # read by the command's code location
    lineage = open_lineage(vault_env["REPOVAULT_DB_URL"])
    log = tmp_path / "materialize.log"

    with instance_for_test(temp_dir=vault_env["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions(REPOSITORIES, [repo_id])
        with log.open("w") as out:
            materialize = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("dagster")),
                    *("asset", "materialize", "-m", "repovault_pipeline.definitions"),
                    *("--select", "repo_archive", "--partition", repo_id),
                ],
                cwd=tmp_path,
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def retrying() -> Request | None:
                assert materialize.poll() is None, log.read_text()[-4000:]
                rows = [r for r in lineage.find(repo_id=repo_id) if r.error]
                return rows[0] if rows else None

            row = wait_until(retrying, 120, lambda: f"no error on the row: {log.read_text()}")
            status = console("repovault", "status", f"https://{repo_id}.git", cwd=tmp_path)
        finally:
            os.killpg(materialize.pid, signal.SIGKILL)
            materialize.wait()

    assert row.status == "in_progress"
    assert row.error.startswith("attempt 1 of 4 failed: git ls-remote: network error: ")
    assert "Couldn't connect to server" in row.error
    assert f"no URL is known for {repo_id}, so https://{repo_id}.git was cloned" in row.error
    assert "run tag repovault/repo_url=<clone URL>" in row.error
    assert row.error.endswith("; retrying")
    assert status.returncode == 0, status.stderr
    assert "in_progress" in status.stdout
    assert "attempt 1 of 4 failed: git ls-remote: network error" in status.stdout
