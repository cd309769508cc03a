"""A run without a kept mirror (REPOVAULT_MIRROR_DIR unset) seeds its clone from the latest
snapshot's bundle chain and fetches only what is new, against real servers (git over smart
HTTP, S3 = moto server): the forge is asked with `have` lines, the snapshot restores exactly the
source's refs, deleted and force-pushed refs come out as a fresh clone shows them, and a broken
chain falls back to a plain clone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.core.test_chains import manifest_of
from tests.core.test_mirror import (
    assert_archived_exactly,
    assert_as_a_fresh_clone_shows,
    repo,
    rewrite_upstream,
)
from tests.support.archiving import archive
from tests.support.git_http_server import LoggedRequest, logged_requests
from tests.support.repos import ServedRepo
from tests.support.vault_checks import s3

__all__ = ["repo"]  # the fixture, shared with the mirror tests
pytestmark = pytest.mark.usefixtures("vault_env")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the runs log, from INFO up."""
    caplog.set_level(logging.INFO)
    return caplog


def fetches(log: Path, repo: ServedRepo) -> list[LoggedRequest]:
    """The upload-pack fetch requests the server got for `repo` (not its wiki)."""
    path = "/" + repo.url.split("/", 3)[3] + "/"
    return [r for r in logged_requests(log, path) if r.command == "fetch"]


def test_a_second_archive_seeds_from_the_store_and_fetches_only_what_is_new(
    repo: ServedRepo, git_server_log: Path, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    first = archive(repo)
    cloned = fetches(git_server_log, repo)
    assert cloned and all(r.haves == 0 for r in cloned)  # a clone has nothing to offer
    new_head = repo.commit({"c.txt": "one more line\n"})
    repo.push()
    logs.clear()  # what the second run logs

    second = archive(repo)

    assert f"seeded {repo.url} from snapshot {first.snapshot_id}" in logs.text
    assert f"cloning {repo.url}" not in logs.text
    seeded = fetches(git_server_log, repo)[len(cloned) :]
    # The fetch told the forge what the snapshot holds: only the new commit comes over.
    assert seeded and all(r.haves > 0 for r in seeded)
    assert second.head_commit == new_head
    assert manifest_of(second)["base"] == first.snapshot_id
    assert_archived_exactly(repo, second, tmp_path / "restored")


def test_deleted_and_force_pushed_refs_archive_as_a_fresh_clone_shows_them(
    repo: ServedRepo, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    first = archive(repo)
    rewrite_upstream(repo)

    second = archive(repo)

    assert f"seeded {repo.url} from snapshot {first.snapshot_id}" in logs.text
    assert_as_a_fresh_clone_shows(repo, second, tmp_path)


def test_a_broken_chain_falls_back_to_a_clone(
    repo: ServedRepo, tmp_path: Path, logs: pytest.LogCaptureFixture
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
    logs.clear()

    third = archive(repo)

    assert f"snapshot {second.snapshot_id} could not seed the clone" in logs.text
    assert "cloning afresh" in logs.text
    assert f"cloning {repo.url}" in logs.text
    assert f"seeded {repo.url}" not in logs.text
    assert manifest_of(third).get("base") is None  # nor is the broken chain built on
    assert_archived_exactly(repo, third, tmp_path / "restored")
