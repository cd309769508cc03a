"""A `latest.json` that names a snapshot the bucket does not hold (issue 20, item 6): a writer
with a fast clock, an operator's mistake. It used to freeze the bucket: `list` dropped the
repository, `restore` said nothing was stored although two snapshots were, and every later run
kept the pointer. Now it is damage that is shown, worked around and repaired."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges import forge_of
from repovault_pipeline.core.sources.metadata.archive import MetadataArchiver
from repovault_pipeline.core.sources.metadata.restore import restore_metadata
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.support.archiving import archive
from tests.support.forge_metadata import FakeGitHub
from tests.support.repos import ServedRepo
from tests.support.user_checks import console
from tests.support.vault_checks import read_json, s3

FUTURE = "20991231T235959Z-0123456789ab"  # what a writer whose clock runs 73 years ahead names


def point_latest_at(bucket: str, snapshot_id: str, key: str = "latest.json", **extra: str) -> None:
    """Write the pointer as a faulty writer would: straight into the bucket."""
    doc = {"snapshot_id": snapshot_id, **extra}
    s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())


def test_a_pointer_to_a_missing_snapshot_is_listed_restored_and_repaired(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    repo = make_repo("pointer")
    repo.commit({"a.txt": "one\n"})
    repo.push()
    archive(repo)
    repo.commit({"a.txt": "two\n"})
    repo.push()
    second = archive(repo)
    point_latest_at(second.bucket, FUTURE, repo_id=second.repo_id)

    listed = console("repovault", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(second.repo_id)]
    assert row.split()[:3] == [second.repo_id, second.bucket, second.snapshot_id]
    assert f"latest.json names snapshot {FUTURE}, which is not stored" in listed.stderr
    assert f"the newest complete snapshot is {second.snapshot_id}" in listed.stderr

    dest = tmp_path / "restored"
    restored = console("repovault", "restore", second.repo_id, str(dest), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert f"snapshot {second.snapshot_id}" in restored.stdout
    assert f"{FUTURE}, which is not stored" in restored.stderr
    assert (dest / "a.txt").read_text() == "two\n"

    third = archive(repo)  # the next run: nothing changed upstream
    assert (third.outcome, third.snapshot_id) == ("unchanged", second.snapshot_id)
    assert read_json(second.bucket, "latest.json")["snapshot_id"] == second.snapshot_id
    again = console("repovault", "list", cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""


def test_a_changed_repository_moves_a_pointer_to_an_incomplete_snapshot_forward(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo]
) -> None:
    """The pointer names a newer snapshot whose upload never finished (no manifest): the
    next snapshot, although its id is older, replaces it; a complete newer one would not be."""
    repo = make_repo("incomplete")
    repo.commit({"a.txt": "one\n"})
    repo.push()
    first = archive(repo)
    s3().put_object(Bucket=first.bucket, Key=f"snapshots/{FUTURE}/repo.bundle", Body=b"cut")
    point_latest_at(first.bucket, FUTURE, repo_id=first.repo_id)
    store = open_store(Settings.from_env())
    pointer = SnapshotReader(store, first.bucket).pointer()
    assert pointer.manifest is not None and pointer.manifest.snapshot_id == first.snapshot_id
    assert pointer.damage and "incomplete (no manifest.json)" in pointer.damage

    repo.commit({"a.txt": "two\n"})
    repo.push()
    second = archive(repo)
    assert second.outcome == "completed" and second.snapshot_id < FUTURE
    assert read_json(first.bucket, "latest.json")["snapshot_id"] == second.snapshot_id
    assert SnapshotReader(store, first.bucket).pointer().damage is None


def test_a_complete_snapshot_from_a_fast_clock_fails_the_run_saying_so(
    vault_env: dict[str, str], make_repo: Callable[..., ServedRepo]
) -> None:
    """A complete snapshot dated decades ahead: a run used to wait, a second at a time, for
    this host's clock to pass it (a hang until the run timeout). It fails at once, naming the
    clock fault, writes nothing and leaves no clone behind."""
    repo = make_repo("fastclock")
    repo.commit({"a.txt": "one\n"})
    repo.push()
    first = archive(repo)
    manifest = read_json(first.bucket, f"snapshots/{first.snapshot_id}/manifest.json")
    manifest["snapshot_id"] = FUTURE
    key = f"snapshots/{FUTURE}/manifest.json"
    s3().put_object(Bucket=first.bucket, Key=key, Body=json.dumps(manifest).encode())
    point_latest_at(first.bucket, FUTURE, repo_id=first.repo_id)
    repo.commit({"a.txt": "two\n"})
    repo.push()

    with pytest.raises(ArchiveError, match=f"the latest snapshot {FUTURE} is dated .* ahead"):
        archive(repo)
    assert read_json(first.bucket, "latest.json")["snapshot_id"] == FUTURE
    assert not any(Path(vault_env["REPOVAULT_WORK_DIR"]).iterdir())


def test_the_metadata_pointer_follows_the_same_rules(
    vault_env: dict[str, str], monkeypatch, tmp_path: Path
) -> None:
    """metadata/latest.json naming a missing snapshot: restore uses the newest complete one and
    says so; the next run (nothing changed upstream: only the pointer is written, under the
    lease) repairs it."""
    forge = FakeGitHub("acme", "tool")
    monkeypatch.setenv("REPOVAULT_GITHUB_API", forge.api)
    forge.add_issue("issue 1")
    settings = Settings.from_env()
    store = open_store(settings)
    ref = parse_repo_url("https://127.0.0.1/acme/tool.git", ("https",), ("127.0.0.1",))
    found = forge_of(ref, settings)
    assert found is not None
    try:
        first = MetadataArchiver(settings, store).archive(ref, found)
        assert first.snapshot_id
        point_latest_at(first.bucket, FUTURE, "metadata/latest.json")

        meta = restore_metadata(store, first.bucket, ref.repo_id, tmp_path / "meta")
        assert meta.snapshot_id == first.snapshot_id and meta.records["issues"] == 1
        assert meta.note and f"{FUTURE}, which is not stored" in meta.note

        again = MetadataArchiver(settings, store).archive(ref, found)
        assert again.snapshot_id is None and not again.full  # incremental, from the manifest
    finally:
        forge.close()
    pointer = read_json(first.bucket, "metadata/latest.json")
    assert pointer["snapshot_id"] == first.snapshot_id and "fetched_at" in pointer
    lease = read_json(first.bucket, "lease.json")
    assert lease["state"] == "free" and lease["snapshot_id"] == first.snapshot_id


def test_the_api_lists_the_repository_with_the_warning(
    make_repo: Callable[..., ServedRepo], api: str, http: requests.Session
) -> None:
    repo = make_repo("api")
    repo.commit({"a.txt": "one\n"})
    repo.push()
    first = archive(repo)
    point_latest_at(first.bucket, FUTURE, repo_id=first.repo_id)

    repositories = f"{api}/api/repositories"
    listed = http.get(repositories, timeout=60).json()["repositories"]
    snapshots = http.get(f"{repositories}/{first.repo_id}/snapshots", timeout=60).json()
    [repository] = [r for r in listed if r["repo_id"] == first.repo_id]
    assert repository["snapshot_id"] == first.snapshot_id
    assert f"names snapshot {FUTURE}, which is not stored" in repository["warning"]
    assert snapshots["latest"] == first.snapshot_id and FUTURE in snapshots["warning"]
