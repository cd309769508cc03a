"""Retention after a force-push: the only snapshot holding the old history is never deleted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.core.test_archive import archive
from tests.support.repos import ServedRepo, git


def test_force_push_keeps_the_old_history_snapshot(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("REPOVAULT_KEEP_SNAPSHOTS", "2")
    # Full bundles only: pins alone decide here (bases a chain needs: tests/core/test_chains.py).
    monkeypatch.setenv("REPOVAULT_CHAIN_MAX", "0")
    repo = make_repo("rewritten")
    repo.commit({"secret-history.txt": "old\n"}, message="old root")
    old_head = repo.commit({"more.txt": "old 2\n"}, message="old tip")
    repo.push()
    before = archive(repo)
    # History rewritten: a new root, force-pushed over main.
    git(repo.work, "checkout", "-q", "--orphan", "rewrite")
    git(repo.work, "rm", "-rq", "--cached", ".")
    git(repo.work, "branch", "-D", "main")
    git(repo.work, "checkout", "-q", "-b", "main")
    results = []
    for i in range(3):  # REPOVAULT_KEEP_SNAPSHOTS + 1 archives of the new history
        repo.commit({"new.txt": f"new {i}\n"}, message=f"new {i}")
        repo.push()
        results.append(archive(repo))
    second = results[0]

    reader = SnapshotReader(open_store(Settings.from_env()), before.bucket)
    complete, _ = reader.snapshot_ids()
    # The two newest, and the pre-rewrite snapshot; the first rewritten one was deleted (its
    # commits are all in the newer ones).
    assert complete == [results[2].snapshot_id, results[1].snapshot_id, before.snapshot_id]
    assert second.snapshot_id not in complete
    assert results[2].snapshots_deleted == 1

    dest = tmp_path / "old"
    assert cli(["restore", before.repo_id, str(dest), "--snapshot", before.snapshot_id]) == 0
    assert f"HEAD {old_head}" in capsys.readouterr().out
    assert (dest / "secret-history.txt").read_text() == "old\n"

    # Once a newer retained snapshot names those commits too, nothing more is pinned: the next
    # archives of the new history rotate normally and the pinned one stays alone.
    repo.commit({"new.txt": "newest\n"})
    repo.push()
    latest = archive(repo)
    complete, _ = reader.snapshot_ids()
    assert complete == [latest.snapshot_id, results[2].snapshot_id, before.snapshot_id]
