"""`repovault forget`, run as a user runs it (a process of its own, from another folder, with
the Dagster instance of DAGSTER_HOME): it drops the partition, the requests and the refresh
state and keeps the bucket; `--purge` deletes its objects; an unknown repository is refused in
one line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import boto3
from dagster import DagsterInstance

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import new_request_id, now, open_lineage
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import REPOSITORIES
from tests.support.repos import ServedRepo
from tests.support.user_checks import console


def test_forget_drops_partition_and_rows_and_keeps_the_bucket_unless_purged(
    vault_env: dict[str, str],
    private_lineage: str,
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
) -> None:
    (Path(vault_env["DAGSTER_HOME"]) / "dagster.yaml").touch()  # as `make run` leaves it
    repo = make_repo("mistaken")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    with DagsterInstance.get() as instance:  # the instance at DAGSTER_HOME, as the daemon's
        instance.add_dynamic_partitions(REPOSITORIES, [repo.repo_id])
        assert (
            defs.resolve_job_def("archive_repo_job")
            .execute_in_process(
                partition_key=repo.repo_id,
                instance=instance,
                tags=request_tags(new_request_id(), repo.url, "cli", now()),
            )
            .success
        )
    lineage = open_lineage(private_lineage)
    fleet = FleetStore(lineage.engine)
    [row] = lineage.find(repo_id=repo.repo_id)
    assert fleet.get([repo.repo_id])
    bucket = bucket_name(repo.repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])

    forgotten = console("repovault", "forget", repo.url, cwd=tmp_path)
    assert forgotten.returncode == 0, forgotten.stderr
    said = forgotten.stdout.splitlines()
    assert said[0] == (
        f"{repo.repo_id}: dropped its partition; deleted 1 requests; deleted its refresh state"
    )
    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    stored = s3.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert f"snapshots/{row.snapshot_id}/manifest.json" in [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert said[1] == f"{repo.repo_id}: kept bucket {bucket} ({stored} objects; --purge deletes it)"
    with DagsterInstance.get() as instance:
        assert repo.repo_id not in instance.get_dynamic_partitions(REPOSITORIES)
    assert lineage.find(repo_id=repo.repo_id) == [] and fleet.get([repo.repo_id]) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == stored  # the snapshots stay

    purged = console("repovault", "forget", "--purge", repo.repo_id, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    first, second = purged.stdout.splitlines()
    assert first == f"{repo.repo_id}: no partition; deleted 0 requests"
    assert second == (
        f"{repo.repo_id}: deleted the {stored} objects of bucket {bucket} (the empty bucket "
        "stays: RepoVault's S3 policy grants no s3:DeleteBucket)"
    )
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert repo.repo_id not in console("repovault", "list", cwd=tmp_path).stdout

    unknown = console("repovault", "forget", repo.url, cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr == (
        f"repovault forget: RepoVault knows no repository {repo.repo_id}: no partition, "
        "request, state or bucket; `repovault list` and `repovault status` show what it knows\n"
    )
