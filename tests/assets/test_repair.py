"""A damaged snapshot gets repaired: `repovault submit --force` (through `pendientes`, the
injector and the run tag `repovault/force=true`) writes a fresh one although the refs did not
move, and an archive run whose latest snapshot's last `restorable` check failed writes one by
itself (tests/core/test_repair.py: one whose bundle is missing or cut short). A first run that
fails leaves the partition without a check result."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from dagster import DagsterInstance, instance_for_test
from dagster._core.event_api import PartitionKeyFilter

from repovault_pipeline.assets.check_records import RESTORABLE
from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.kafka import KafkaGateway
from repovault_pipeline.core.intake.runs import TAG_FORCE, TAG_REQUEST_ID, request_tags
from repovault_pipeline.core.lineage.requests import new_request_id, now, open_lineage
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.sensors.test_kafka_injector import drain
from tests.support.repos import ServedRepo
from tests.support.user_checks import console


@pytest.fixture
def instance(vault_env: dict[str, str], private_lineage: str) -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def archive_run(instance: DagsterInstance, repo: ServedRepo, tags: dict[str, str] | None = None):
    """archive_repo_job on the repository's partition, as the daemon launches it."""
    instance.add_dynamic_partitions(repositories.name, [repo.repo_id])
    return defs.resolve_job_def("archive_repo_job").execute_in_process(
        partition_key=repo.repo_id,
        instance=instance,
        tags=tags or request_tags(new_request_id(), repo.url, "cli", now()),
        raise_on_error=False,
    )


def outcome(result) -> dict:
    [materialization] = result.asset_materializations_for_node("repo_archive")
    return {k: v.value for k, v in materialization.metadata.items()}


def s3():
    return boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])


def bundle(repo: ServedRepo, snapshot_id: str) -> tuple[str, str]:
    bucket = bucket_name(repo.repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
    return bucket, f"snapshots/{snapshot_id}/repo.bundle"


def flip_a_byte(repo: ServedRepo, snapshot_id: str) -> None:
    """Same size, other content: only a full check (sha256) sees it."""
    bucket, key = bundle(repo, snapshot_id)
    data = bytearray(s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3().put_object(Bucket=bucket, Key=key, Body=bytes(data))


def drill_check(instance: DagsterInstance, repo: ServedRepo):
    """What the restore drill launches (archive_repo_job, only the check selected): its
    evaluation."""
    drill = (
        defs.resolve_job_def("archive_repo_job")
        .get_subset(asset_selection=set(), asset_check_selection={RESTORABLE})
        .execute_in_process(partition_key=repo.repo_id, instance=instance)
    )
    [evaluation] = drill.get_asset_check_evaluations()
    return evaluation


def served(make_repo: Callable[..., ServedRepo], name: str) -> ServedRepo:
    repo = make_repo(name)
    repo.commit({"README.md": "hello\n"})
    repo.push()
    return repo


def test_submit_force_repairs_a_damaged_snapshot(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    KafkaGateway(Settings.from_env()).ensure_topics()
    repo = served(make_repo, "forced")
    first = archive_run(instance, repo)
    assert first.success
    damaged = outcome(first)["snapshot_id"]
    flip_a_byte(repo, damaged)

    verified = console("repovault", "verify", repo.url, cwd=tmp_path)
    assert verified.returncode == 1 and ": bundle_tampered: " in verified.stderr
    assert verified.stderr.count("\n") == 1
    # The only snapshot: the advice is the forced run, not --snapshot.
    assert f"no other snapshot is stored: `repovault submit --force {repo.url}`" in (
        verified.stderr
    )
    assert "--snapshot" not in verified.stderr

    submitted = console("repovault", "submit", "--force", repo.url, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()
    [run_request], _, _ = drain(instance)  # `pendientes` -> the injector -> a run request
    assert run_request.tags[TAG_REQUEST_ID] == request_id
    assert run_request.tags[TAG_FORCE] == "true"
    forced = archive_run(instance, repo, run_request.tags)
    assert forced.success
    written = outcome(forced)
    assert written["outcome"] == "completed" and written["snapshot_id"] != damaged
    assert written["fresh"] == "forced by the request"
    [check] = forced.get_asset_check_evaluations()
    assert check.passed
    row = open_lineage(os.environ["REPOVAULT_DB_URL"]).get(request_id)
    assert row is not None and (row.status, row.snapshot_id) == (
        "completed",
        written["snapshot_id"],
    )
    verified = console("repovault", "verify", "--deep", repo.url, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert f"snapshot {written['snapshot_id']} restores (deep pass)" in verified.stdout


def test_an_unchanged_run_repairs_a_snapshot_known_not_to_restore(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = served(make_repo, "repaired")
    first = archive_run(instance, repo)
    assert first.success

    # A flipped byte: only the restorable check sees it (here, the restore drill's run).
    flip_a_byte(repo, outcome(first)["snapshot_id"])
    failed = drill_check(instance, repo)
    assert not failed.passed and failed.metadata["reason"].value == "bundle_tampered"
    second = archive_run(instance, repo)
    assert second.success
    repaired = outcome(second)
    assert repaired["outcome"] == "completed"
    assert repaired["fresh"] == "the last restorable check of it failed (bundle_tampered)"
    [check] = second.get_asset_check_evaluations()
    assert check.passed


def test_a_hand_deleted_tree_file_of_a_quiet_bucket_is_found_by_the_drill_and_repaired(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo]
) -> None:
    """A quiet bucket's run trusts `tree.json` (no listing of `tree/`) and its check proves
    what it wrote: the restore drill (the deep pass) finds the hole a hand edit left, and the
    next run writes a fresh snapshot that fills it, proven whole by the quick pass."""
    repo = served(make_repo, "handmade")
    assert archive_run(instance, repo).success
    bucket, _ = bundle(repo, "")
    s3().delete_object(Bucket=bucket, Key="tree/README.md")
    found = drill_check(instance, repo)
    assert not found.passed and found.metadata["reason"].value == "tree_missing_object"
    repaired = archive_run(instance, repo)
    assert outcome(repaired)["outcome"] == "completed"
    assert outcome(repaired)["fresh"].startswith("the last restorable check of it failed")
    [check] = repaired.get_asset_check_evaluations()
    assert check.passed and check.metadata["depth"].value == "quick"
    assert check.metadata["tree_checked"].value == 1  # all of tree/
    assert s3().get_object(Bucket=bucket, Key="tree/README.md")["Body"].read() == b"hello\n"


def test_a_failed_first_run_leaves_no_check_result(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo], closed_port: int
) -> None:
    """A mistyped repository never archives: its partition shows no `restorable` result (not
    "execution failed"), and the check's latest execution stays the passing one of another."""
    good = served(make_repo, "good")
    assert archive_run(instance, good).success
    typo = f"127.0.0.1:{closed_port}/nobody/typo"
    instance.add_dynamic_partitions(repositories.name, [typo])
    failed = defs.resolve_job_def("archive_repo_job").execute_in_process(
        partition_key=typo,
        instance=instance,
        tags=request_tags(new_request_id(), f"http://{typo}.git", "cli", now()),
        raise_on_error=False,
    )
    assert not failed.success
    storage = instance.event_log_storage
    assert (
        storage.get_latest_asset_check_execution_by_key(
            [RESTORABLE], partition_filter=PartitionKeyFilter(key=typo)
        )
        == {}
    )
    [latest] = storage.get_latest_asset_check_execution_by_key([RESTORABLE]).values()
    assert (latest.status.value, latest.partition) == ("SUCCEEDED", good.repo_id)
