"""The `restorable` check through Dagster: it runs after the archive in the same run and passes;
after a corruption made on the S3 server, the restore drill's run fails it with the reason."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    DagsterInstance,
    build_schedule_context,
    instance_for_test,
)

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import new_request_id, now, open_lineage
from repovault_pipeline.core.vault.verify import DRILL_DAYS, drill_batch
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from repovault_pipeline.schedules import restore_drill_schedule
from tests.support.repos import ServedRepo, lost_lfs_object

CHECK = AssetCheckKey(asset_key=defs.resolve_assets_def("repo_archive").key, name="restorable")


@pytest.fixture
def instance(vault_env: dict[str, str]) -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def run(instance: DagsterInstance, job: str, repo_id: str, tags: dict[str, str] | None = None):
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=repo_id, instance=instance, tags=tags or {}, raise_on_error=False
    )


def evaluation(result):
    [check] = result.get_asset_check_evaluations()
    assert check.asset_check_key == CHECK
    return check


def test_the_check_passes_after_an_archive_and_fails_in_the_drill_with_its_reason(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("checked")
    repo.commit({"README.md": "hello\n", "src/x.py": "x = 1\n"})
    repo.push()
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")

    monkeypatch.setenv("REPOVAULT_MINIO_CONSOLE_URL", "http://console.example:9001/")
    tags = request_tags(new_request_id(), repo.url, "cli", now())
    archived = run(instance, "archive_repo_job", repo_id, tags)
    assert archived.success
    [materialization] = archived.asset_materializations_for_node("repo_archive")
    bucket = bucket_name(repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
    # Readable per-repository figures: sizes in units, the bucket's page in the MinIO console.
    assert materialization.metadata["bucket"].value == (
        f"http://console.example:9001/browser/{bucket}"
    )
    assert materialization.metadata["sizes"].value.startswith("bundle ")
    assert "; tree 2 files, 12 B; uploaded " in materialization.metadata["sizes"].value
    check = evaluation(archived)
    meta = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and meta["reason"] == "ok"
    assert meta["snapshot_id"] == materialization.metadata["snapshot_id"].value
    assert meta["tree_checked"] == 2 and meta["refs"] == 1
    # In the archive run, the run pass: what the run wrote against the manifest, nothing
    # downloaded.
    assert meta["depth"] == "run" and meta["bundle_rebuilt"] is False
    assert "run pass" in (check.description or "")

    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    s3.delete_object(Bucket=bucket, Key="tree/src/x.py")

    # What the restore drill launches: archive_repo_job with only the check selected.
    drill = (
        defs.resolve_job_def("archive_repo_job")
        .get_subset(asset_selection=set(), asset_check_selection={CHECK})
        .execute_in_process(partition_key=repo_id, instance=instance, raise_on_error=False)
    )
    assert drill.success  # the run worked; the check it ran failed
    assert drill.asset_materializations_for_node("repo_archive") == []
    check = evaluation(drill)
    assert not check.passed
    assert check.metadata["reason"].value == "tree_missing_object"
    assert check.metadata["depth"].value == "deep"  # a run of the check alone: the deep pass
    assert "tree/src/x.py" in check.metadata["detail"].value
    # What the UI's Checks tab shows: the latest execution of this partition's check failed.
    history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=5)
    assert [r.status.value for r in history] == ["FAILED", "SUCCEEDED"]
    assert [r.run_id for r in history] == [drill.run_id, archived.run_id]


def test_the_drill_checks_every_repository_once_a_week_in_daily_batches(
    instance: DagsterInstance,
) -> None:
    repo_ids = [f"example.com/o/r{n}" for n in range(70)]
    batches = [drill_batch(repo_ids, day) for day in range(DRILL_DAYS)]
    assert sorted(r for batch in batches for r in batch) == sorted(repo_ids)  # each once
    assert all(batches) and drill_batch(repo_ids, DRILL_DAYS) == batches[0]

    instance.add_dynamic_partitions(repositories.name, repo_ids)
    tick = datetime(2026, 1, 5, 3, tzinfo=UTC)
    for offset in range(DRILL_DAYS):
        when = tick + timedelta(days=offset)
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            repository_def=defs.get_repository_def(),
        )
        requests = list(restore_drill_schedule.evaluate_tick(context).run_requests or [])
        expected = drill_batch(repo_ids, int(when.timestamp() // 86400))
        assert [r.partition_key for r in requests] == expected
        assert all(r.asset_selection == [] and r.asset_check_keys == [CHECK] for r in requests)
        assert len({r.run_key for r in requests}) == len(requests)


def test_a_store_that_cannot_be_asked_is_a_warning_not_a_verdict(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    repo = make_repo("unasked")
    repo.commit({"a.txt": "a\n"})
    repo.push()
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    assert run(
        instance,
        "archive_repo_job",
        repo_id,
        request_tags(new_request_id(), repo.url, "cli", now()),
    ).success
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    drill = (
        defs.resolve_job_def("archive_repo_job")
        .get_subset(asset_selection=set(), asset_check_selection={CHECK})
        .execute_in_process(partition_key=repo_id, instance=instance, raise_on_error=False)
    )
    assert drill.success
    check = evaluation(drill)
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["reason"].value == "unverifiable"


def test_a_snapshot_missing_lfs_objects_is_partial_and_fails_the_check(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo]
) -> None:
    """The forge lost an LFS object its history points to: the run keeps what there is, and
    the request, the materialization and the `restorable` check all say so (`lfs_missing`)."""
    repo = make_repo("lost-weights")
    lost_lfs_object(repo)
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    request_id = new_request_id()
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    lineage.record_pending(repo.url, repo_id, "cli", request_id)

    archived = run(
        instance, "archive_repo_job", repo_id, request_tags(request_id, repo.url, "cli", now())
    )
    assert archived.success  # what could be kept is kept
    [materialization] = archived.asset_materializations_for_node("repo_archive")
    assert materialization.metadata["outcome"].value == "partial"
    assert materialization.metadata["lfs_missing_paths"].value == ["model.bin"]
    row = lineage.get(request_id)
    assert row.status == "partial" and list(row.reasons) == ["lfs_missing"]
    assert "1 LFS objects" in row.reasons["lfs_missing"] and "model.bin" in row.error
    check = evaluation(archived)
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["reason"].value == "lfs_missing"
    assert "model.bin" in check.metadata["detail"].value


def test_the_check_rebuilds_an_incremental_snapshot_from_its_chain_and_names_a_broken_link(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("chain-checked")
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    snapshots = []
    for n in range(3):
        repo.commit({"n.txt": f"{n}\n"})
        repo.push()
        archived = run(
            instance,
            "archive_repo_job",
            repo_id,
            request_tags(new_request_id(), repo.url, "cli", now()),
        )
        check = evaluation(archived)
        assert check.passed, check.metadata["detail"].value
        snapshots.append(check.metadata["snapshot_id"].value)

    bucket = bucket_name(repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    key = f"snapshots/{snapshots[1]}/repo.bundle"  # the middle link
    s3.put_object(
        Bucket=bucket, Key=key, Body=s3.get_object(Bucket=bucket, Key=key)["Body"].read() + b"x"
    )
    drill = (
        defs.resolve_job_def("archive_repo_job")
        .get_subset(asset_selection=set(), asset_check_selection={CHECK})
        .execute_in_process(partition_key=repo_id, instance=instance, raise_on_error=False)
    )
    check = evaluation(drill)
    assert not check.passed
    assert check.metadata["reason"].value == "chain_broken"
    assert f"snapshot {snapshots[1]} (base of {snapshots[2]})" in check.metadata["detail"].value
