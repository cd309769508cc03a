"""A run without a kept mirror (REPOVAULT_MIRROR_DIR unset) seeds its clone from the latest
snapshot's bundle chain and fetches only what is new, against real servers (git over smart
HTTP, S3 = moto server): the forge is asked with `have` lines, the snapshot restores exactly the
source's refs, deleted and force-pushed refs come out as a fresh clone shows them, and a broken
chain falls back to a plain clone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.core.test_chains import manifest_of
from tests.core.test_mirror import assert_archived_exactly, fresh_clone, repo, restored
from tests.support.archiving import archive
from tests.support.git_http_server import LoggedRequest, logged_requests
from tests.support.repos import ServedRepo, git
from tests.support.vault_checks import s3

__all__ = ["repo"]  # the fixture, shared with the mirror tests


def fetches(log: Path, repo: ServedRepo) -> list[LoggedRequest]:
    """The upload-pack fetch requests the server got for `repo` (not its wiki)."""
    path = "/" + repo.url.split("/", 3)[3] + "/"
    return [r for r in logged_requests(log, path) if r.command == "fetch"]


def test_a_second_archive_seeds_from_the_store_and_fetches_only_what_is_new(
    vault_env: dict[str, str],
    repo: ServedRepo,
    git_server_log: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = archive(repo)
    cloned = fetches(git_server_log, repo)
    assert cloned and all(r.haves == 0 for r in cloned)  # a clone has nothing to offer
    new_head = repo.commit({"c.txt": "one more line\n"})
    repo.push()

    with caplog.at_level(logging.INFO):
        second = archive(repo)

    assert f"seeded {repo.url} from snapshot {first.snapshot_id}" in caplog.text
    assert f"cloning {repo.url}" not in caplog.text
    seeded = fetches(git_server_log, repo)[len(cloned) :]
    # The fetch told the forge what the snapshot holds: only the new commit comes over.
    assert seeded and all(r.haves > 0 for r in seeded)
    assert second.head_commit == new_head
    assert manifest_of(second)["base"] == first.snapshot_id
    assert_archived_exactly(repo, second, tmp_path / "restored")


def test_deleted_and_force_pushed_refs_archive_as_a_fresh_clone_shows_them(
    vault_env: dict[str, str],
    repo: ServedRepo,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = archive(repo)
    git(repo.work, "branch", "-D", "feature")
    git(repo.work, "tag", "-d", "v2")
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    repo.commit({"a.txt": "rewritten\n"}, message="force-pushed")
    repo.branch("release")
    repo.commit({"r.txt": "r\n"})
    repo.push()
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/release")

    with caplog.at_level(logging.INFO):
        second = archive(repo)

    assert f"seeded {repo.url} from snapshot {first.snapshot_id}" in caplog.text
    clone_refs, clone_head = fresh_clone(repo, tmp_path / "fresh.git")
    assert clone_refs == repo.refs()
    assert "refs/heads/feature" not in clone_refs and "refs/tags/v2" not in clone_refs
    manifest = SnapshotReader(open_store(Settings.from_env()), second.bucket).manifest(
        second.snapshot_id or ""
    )
    assert manifest is not None
    assert manifest.refs == clone_refs
    assert f"refs/heads/{manifest.default_branch}" == clone_head
    refs, head = restored(repo, tmp_path / "restored")
    assert (refs, head) == (clone_refs, clone_refs[clone_head])


def test_a_broken_chain_falls_back_to_a_clone(
    vault_env: dict[str, str],
    repo: ServedRepo,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = archive(repo)
    repo.commit({"c.txt": "c\n"})
    repo.push()
    second = archive(repo)
    assert manifest_of(second)["base"] == first.snapshot_id
    # The chain's full bundle goes: the latest snapshot cannot seed anything.
    s3().delete_object(Bucket=first.bucket, Key=manifest_of(first)["bundle"]["key"])
    repo.commit({"d.txt": "d\n"})
    repo.push()

    with caplog.at_level(logging.INFO):
        third = archive(repo)

    assert f"snapshot {second.snapshot_id} could not seed the clone" in caplog.text
    assert "cloning afresh" in caplog.text
    assert f"cloning {repo.url}" in caplog.text
    assert f"seeded {repo.url}" not in caplog.text
    assert manifest_of(third).get("base") is None  # nor is the broken chain built on
    assert_archived_exactly(repo, third, tmp_path / "restored")
