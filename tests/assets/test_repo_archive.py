"""`archive_repo_job` end to end: Dagster run -> git server -> S3 server -> PostgreSQL lineage."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from dagster import DagsterEventType, DagsterInstance, instance_for_test

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.intake.runs import request_tags
from repovault_pipeline.core.lineage.requests import LineageStore, now, open_lineage
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.prepare import Prepared
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.definitions import defs
from repovault_pipeline.partitions import repositories
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.small_disk import small_disk
from tests.support.tcp_proxy import BreakableProxy


@pytest.fixture
def instance(vault_env: dict[str, str]) -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def run_job(instance: DagsterInstance, repo_id: str, tags: dict[str, str] | None = None):
    instance.add_dynamic_partitions(repositories.name, [repo_id])
    job = defs.resolve_job_def("archive_repo_job")
    return job.execute_in_process(
        partition_key=repo_id, instance=instance, tags=tags or {}, raise_on_error=False
    )


def lineage() -> LineageStore:
    return open_lineage(os.environ["REPOVAULT_DB_URL"])


def test_job_materializes_a_partition_and_records_its_lineage(
    instance: DagsterInstance, make_repo: Callable[..., ServedRepo]
) -> None:
    repo = make_repo("dagster-e2e")
    repo.commit({"README.md": "hello\n", "lib/x.py": "x = 1\n"})
    repo.push()
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    requested = now()
    request_id = lineage().record_pending(repo.url, repo_id, "cli", created_at=requested)

    result = run_job(instance, repo_id, request_tags(request_id, repo.url, "cli", requested))

    assert result.success
    [materialization] = result.asset_materializations_for_node("repo_archive")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    head = repo.refs()["refs/heads/main"]
    assert materialization.partition == repo_id
    assert meta["outcome"] == "completed" and meta["head_commit"] == head
    assert meta["tree_files"] == 2 and meta["bytes_uploaded"] > 0
    assert meta["bucket"].endswith(bucket_name(repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"]))

    row = lineage().get(request_id)
    assert row.status == "completed" and row.run_id == result.run_id
    assert row.head_commit == head and row.snapshot_id == meta["snapshot_id"]
    assert row.creation_timestamp <= row.worker_start_timestamp <= row.worker_finishing_timestamp
    assert all(t.tzinfo is not None for t in (row.creation_timestamp, row.worker_start_timestamp))

    s3 = boto3.client("s3", endpoint_url=os.environ["REPOVAULT_S3_ENDPOINT"])
    bucket = bucket_name(repo_id, os.environ["REPOVAULT_BUCKET_PREFIX"])
    latest = json.loads(s3.get_object(Bucket=bucket, Key="latest.json")["Body"].read())
    assert latest["snapshot_id"] == meta["snapshot_id"]

    again = run_job(instance, repo_id)  # as from the UI: no request tags
    assert again.success
    [second] = again.asset_materializations_for_node("repo_archive")
    assert second.metadata["outcome"].value == "unchanged"
    ui_rows = [r for r in lineage().find(repo_id=repo_id) if r.request_id != request_id]
    assert [(r.source, r.status, r.repo_url) for r in ui_rows] == [("ui", "unchanged", repo.url)]


@pytest.mark.parametrize("problem", ["missing", "too_large", "bad_tag"])
def test_permanent_failures_fail_at_once_with_the_reason_in_lineage(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
) -> None:
    repo = make_repo("doomed")
    repo.commit({f"{i}.bin": os.urandom(700 * 1024) for i in range(3)})
    repo.push()
    url, expected = repo.url, "REPOVAULT_MAX_REPO_MB=1"
    if problem == "missing":
        url, expected = repo.url.replace("doomed", "nowhere"), "not found"
    elif problem == "bad_tag":
        url, expected = "https://user:s3cr3t@127.0.0.1/a/b", "GITHUB_TOKEN"
    monkeypatch.setenv("REPOVAULT_MAX_REPO_MB", "1")
    repo_id = url.split("://")[1].split("@")[-1].removesuffix(".git")
    request_id = lineage().record_pending("masked", repo_id, "cli")

    result = run_job(instance, repo_id, request_tags(request_id, url, "cli", now()))

    assert not result.success
    events = instance.all_logs(result.run_id)
    assert not [
        e
        for e in events
        if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    ]
    row = lineage().get(request_id)
    assert row.status == "failed" and expected in row.error
    assert row.worker_finishing_timestamp >= row.worker_start_timestamp
    assert "s3cr3t" not in row.error and "s3cr3t" not in row.repo_url
    work = Path(os.environ["REPOVAULT_WORK_DIR"])
    assert not work.exists() or not any(work.iterdir())  # the clone is freed

    [started] = read_json(os.environ["REPOVAULT_TOPIC_IN_PROGRESS"])
    [ended] = read_json(os.environ["REPOVAULT_TOPIC_COMPLETED"])
    assert started["request_id"] == ended["request_id"] == request_id
    assert (ended["status"], ended["run_id"]) == ("failed", result.run_id)
    assert expected in ended["error"] and "s3cr3t" not in json.dumps(ended)


def test_outputs_stay_in_memory_and_a_step_retry_still_gets_its_input(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    vault_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No op output or asset value is pickled under the instance's storage/ folder (compute
    logs aside); an upload cut by S3 is retried, and the retry takes the clone from memory."""
    repo = make_repo("in-memory")
    repo.commit({"README.md": "kept in memory\n"})
    repo.push()
    repo_id = repo.url.removeprefix("http://").removesuffix(".git")
    bucket = bucket_name(repo_id, vault_env["REPOVAULT_BUCKET_PREFIX"])
    s3_port = int(vault_env["REPOVAULT_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = BreakableProxy(s3_port, break_on=f"PUT /{bucket}/".encode())
    monkeypatch.setenv("REPOVAULT_S3_ENDPOINT", proxy.endpoint)
    step = "repo_archive.upload_snapshot"
    # The S3 link heals when the step's retry starts uploading (not on a clock): boto3's own
    # retries within the first attempt all fail, the step's retry must succeed.
    first_upload = SnapshotWriter.upload
    attempts: list[Prepared] = []

    def upload(writer: SnapshotWriter, prepared: Prepared) -> ArchiveResult:
        if attempts:
            proxy.heal()
        attempts.append(prepared)
        return first_upload(writer, prepared)

    monkeypatch.setattr(SnapshotWriter, "upload", upload)
    requested = now()
    request_id = lineage().record_pending(repo.url, repo_id, "cli", created_at=requested)
    try:
        result = run_job(instance, repo_id, request_tags(request_id, repo.url, "cli", requested))
    finally:
        proxy.close()

    assert result.success
    retried = [
        e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_RESTARTED
    ]
    assert retried == [step]
    [materialization] = result.asset_materializations_for_node("repo_archive")
    assert materialization.metadata["outcome"].value == "completed"
    storage = Path(instance.storage_directory())
    stored = [
        str(path.relative_to(storage))
        for path in storage.rglob("*")
        if path.is_file() and "compute_logs" not in path.parts
    ]
    assert stored == []


def test_a_full_work_folder_fails_the_run_saying_so(
    instance: DagsterInstance,
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Issue 20, item 8: a clone that fills the disk under REPOVAULT_WORK_DIR (a real 512 kB
    tmpfs) failed as `fetch-pack: invalid index-pack output`; the row must say the work folder
    is full, where it is, and what the repository needed; no retry, nothing left behind."""
    repo = make_repo("roomy")
    repo.commit({f"{i}.bin": os.urandom(400 * 1024) for i in range(3)})
    repo.push()
    request_id = lineage().record_pending(repo.url, repo.repo_id, "cli")
    with small_disk(tmp_path / "small", 512) as work:
        monkeypatch.setenv("REPOVAULT_WORK_DIR", str(work))
        result = run_job(instance, repo.repo_id, request_tags(request_id, repo.url, "cli", now()))
        assert not any(work.iterdir())  # the failed clone is freed
    assert not result.success
    row = lineage().get(request_id)
    assert row is not None and row.status == "failed"
    assert f"the work folder REPOVAULT_WORK_DIR={work} is full" in row.error, row.error
    assert "the repository needs more than the 0.5 MB free when git clone started" in row.error
    assert "index-pack" not in row.error
    retried = [
        e
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert not retried
