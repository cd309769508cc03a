"""Kept mirrors (REPOVAULT_MIRROR_DIR) against real servers: a re-archive fetches into the
mirror, deleted and force-pushed refs come out as a fresh clone shows them, a damaged, half-
written or idle mirror is rebuilt or removed, and concurrent runs share one mirror safely."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.mirror import MARKER, Mirrors, _locked
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.store import open_store
from tests.support.archiving import archive, archive_url
from tests.support.repos import ServedRepo, git
from tests.support.tcp_proxy import BreakableProxy
from tests.support.vault_checks import kill, start_archive

DAY_S = 86400


@pytest.fixture
def mirror_dir(vault_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mirrors"
    monkeypatch.setenv("REPOVAULT_MIRROR_DIR", str(folder))
    vault_env["REPOVAULT_MIRROR_DIR"] = str(folder)
    return folder


@pytest.fixture
def repo(branched_repo: ServedRepo) -> ServedRepo:
    """main and feature branches, an annotated and a lightweight tag."""
    branched_repo.checkout("feature")
    branched_repo.tag("v2")
    branched_repo.checkout("main")
    branched_repo.commit({"a.txt": "a2\n"})
    branched_repo.push()
    return branched_repo


def mirror_of(mirror_dir: Path, result: ArchiveResult) -> Path:
    return mirror_dir / f"{result.bucket}.git"


def ref_lines(git_dir: Path) -> dict[str, str]:
    out = git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)")
    return {name: sha for sha, name in (line.split(" ", 1) for line in out.splitlines())}


def restored(repo: ServedRepo, dest: Path) -> tuple[dict[str, str], str]:
    """The refs and HEAD commit `repovault restore` gives of the latest snapshot."""
    assert cli(["restore", repo.url, str(dest)]) == 0
    refs = {n: s for n, s in ref_lines(dest).items() if n.startswith(("refs/heads/", "refs/tags"))}
    return refs, git(dest, "rev-parse", "HEAD")


def fresh_clone(repo: ServedRepo, dest: Path) -> tuple[dict[str, str], str]:
    """What a fresh bare clone shows of the remote: its refs and HEAD."""
    subprocess.run(["git", "clone", "-q", "--bare", repo.url, str(dest)], check=True)
    return ref_lines(dest), git(dest, "symbolic-ref", "HEAD")


def assert_archived_exactly(repo: ServedRepo, result: ArchiveResult, dest: Path) -> None:
    assert result.outcome == "completed", result
    assert restored(repo, dest) == (repo.refs(), repo.refs()["refs/heads/main"])


def test_a_second_archive_fetches_into_the_mirror(
    mirror_dir: Path, repo: ServedRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = archive(repo)
    mirror = mirror_of(mirror_dir, first)
    assert ref_lines(mirror) == repo.refs()
    assert not (mirror / "FETCH_HEAD").exists()  # cloned: nothing fetched yet
    new_head = repo.commit({"c.txt": "one more line\n"})
    repo.push()

    with caplog.at_level(logging.INFO):
        second = archive(repo)

    assert f"fetching {repo.url} into its mirror {mirror}" in caplog.text
    assert new_head in (mirror / "FETCH_HEAD").read_text()
    assert second.head_commit == new_head
    assert_archived_exactly(repo, second, tmp_path / "restored")
    # The run worked on a copy of its own, removed with its work folder.
    assert list((Path(os.environ["REPOVAULT_WORK_DIR"])).iterdir()) == []


def rewrite_upstream(repo: ServedRepo) -> None:
    """A branch and a tag deleted, main force-pushed, a new branch that HEAD now names."""
    git(repo.work, "branch", "-D", "feature")
    git(repo.work, "tag", "-d", "v2")
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    repo.commit({"a.txt": "rewritten\n"}, message="force-pushed")
    repo.branch("release")
    repo.commit({"r.txt": "r\n"})
    repo.push()
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/release")


def assert_as_a_fresh_clone_shows(repo: ServedRepo, result: ArchiveResult, tmp_path: Path) -> None:
    """The snapshot's manifest and its restore hold what a fresh clone shows of `repo` now."""
    clone_refs, clone_head = fresh_clone(repo, tmp_path / "fresh.git")
    assert clone_refs == repo.refs()
    assert "refs/heads/feature" not in clone_refs and "refs/tags/v2" not in clone_refs
    manifest = SnapshotReader(open_store(Settings.from_env()), result.bucket).manifest(
        result.snapshot_id or ""
    )
    assert manifest is not None
    assert manifest.refs == clone_refs
    assert f"refs/heads/{manifest.default_branch}" == clone_head
    refs, head = restored(repo, tmp_path / "restored")
    assert (refs, head) == (clone_refs, clone_refs[clone_head])


def test_deleted_and_force_pushed_refs_archive_as_a_fresh_clone_shows_them(
    mirror_dir: Path, repo: ServedRepo, tmp_path: Path
) -> None:
    first = archive(repo)
    rewrite_upstream(repo)

    second = archive(repo)

    assert ref_lines(mirror_of(mirror_dir, first)) == repo.refs()
    assert_as_a_fresh_clone_shows(repo, second, tmp_path)


def truncate_packs(mirror: Path) -> None:
    for pack in (mirror / "objects" / "pack").glob("*.pack"):
        with pack.open("r+b") as f:
            f.truncate(pack.stat().st_size // 2)


def delete_objects(mirror: Path) -> None:
    for found in (mirror / "objects").rglob("*"):
        if found.is_file() and (found.suffix in (".pack", ".idx") or len(found.name) == 38):
            found.unlink()


@pytest.mark.parametrize("damage", [truncate_packs, delete_objects], ids=["truncated", "deleted"])
def test_a_mirror_damaged_on_disk_is_rebuilt(
    damage: Callable[[Path], None],
    mirror_dir: Path,
    repo: ServedRepo,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = mirror_of(mirror_dir, archive(repo))
    damage(mirror)
    repo.commit({"c.txt": "c\n"})
    repo.push()

    with caplog.at_level(logging.INFO):
        second = archive(repo)

    assert f"mirror {mirror} is damaged" in caplog.text
    assert "rebuilding it by a fresh clone" in caplog.text
    assert_archived_exactly(repo, second, tmp_path / "restored")
    assert Mirrors(GitClient(Settings.from_env()), mirror_dir, 30).damage(mirror) is None


def test_a_run_killed_mid_fetch_leaves_a_mirror_the_next_run_rebuilds(
    mirror_dir: Path,
    repo: ServedRepo,
    vault_env: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = int(repo.url.split("/")[2].rsplit(":", 1)[1])
    proxy = BreakableProxy(port)
    url = repo.url.replace(f":{port}/", f":{proxy.port}/")
    try:
        mirror = mirror_of(mirror_dir, archive_url(url))
        repo.commit({"big.bin": os.urandom(3 * 1024 * 1024)})
        repo.push()
        proxy.delay_s, proxy.chunk = 0.05, 4096  # about 80 KB/s: the fetch takes many seconds
        proc = start_archive(url)
        wait_for(lambda: received(mirror) > 64 * 1024)  # mid-fetch: the pack half received
        kill(proc)
        assert not (mirror / MARKER).exists()
        proxy.delay_s = 0.0

        with caplog.at_level(logging.INFO):
            result = archive_url(url)
    finally:
        proxy.close()

    assert f"mirror {mirror} was left half-written" in caplog.text
    assert result.outcome == "completed"
    assert result.head_commit == repo.refs()["refs/heads/main"]
    assert ref_lines(mirror) == repo.refs()
    assert (mirror / MARKER).exists()


def received(mirror: Path) -> int:
    """How much of the pack a fetch is receiving git has written so far."""
    size = 0
    for pack in (mirror / "objects" / "pack").glob("tmp_pack_*"):
        with suppress(FileNotFoundError):  # renamed into place meanwhile
            size += pack.stat().st_size
    return size


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_two_processes_archiving_one_repository_share_its_mirror(
    mirror_dir: Path, repo: ServedRepo, tmp_path: Path
) -> None:
    for round_ in range(2):
        procs = [start_archive(repo.url) for _ in range(2)]
        outs = [proc.communicate(timeout=180) for proc in procs]
        assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outs]
        restored_refs = restored(repo, tmp_path / f"restored-{round_}")
        assert restored_refs == (repo.refs(), repo.refs()["refs/heads/main"])
        repo.commit({"round.txt": f"{round_}\n"})
        repo.push()
    (mirror,) = mirror_dir.glob("*.git")
    assert ref_lines(mirror) != repo.refs()  # the last commit is not fetched yet
    assert Mirrors(GitClient(Settings.from_env()), mirror_dir, 30).damage(mirror) is None


def test_a_busy_mirror_past_the_git_timeout_means_a_fresh_clone(
    mirror_dir: Path,
    repo: ServedRepo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = mirror_of(mirror_dir, archive(repo))
    repo.commit({"c.txt": "c\n"})
    repo.push()
    monkeypatch.setenv("REPOVAULT_GIT_TIMEOUT_S", "1")
    lock = mirror.with_suffix(".lock")
    with _locked(lock, 0) as held, caplog.at_level(logging.INFO):
        assert held
        second = archive(repo)
    assert f"mirror {mirror} stayed busy: cloning {repo.url} afresh" in caplog.text
    assert_archived_exactly(repo, second, tmp_path / "restored")


def test_mirrors_idle_too_long_are_removed_unless_in_use(
    mirror_dir: Path, make_repo: Callable[..., ServedRepo], repo: ServedRepo
) -> None:
    other = make_repo("other")
    other.commit({"o.txt": "o\n"})
    other.push()
    idle, busy = (mirror_of(mirror_dir, archive(r)) for r in (repo, other))
    long_ago = time.time() - 31 * DAY_S
    for mirror in (idle, busy):
        os.utime(mirror / MARKER, (long_ago, long_ago))
    mirrors = Mirrors(GitClient(Settings.from_env()), mirror_dir, 30)

    with _locked(busy.with_suffix(".lock"), 0):
        assert mirrors.sweep() == [idle]

    assert not idle.exists() and not idle.with_suffix(".lock").exists()
    assert busy.exists()
    repo.commit({"c.txt": "c\n"})
    repo.push()
    assert archive(repo).outcome == "completed"  # cloned into a new mirror
    assert ref_lines(idle) == repo.refs()


def test_a_mirror_with_many_packs_is_repacked_into_one_without_what_no_ref_reaches(
    mirror_dir: Path, repo: ServedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repovault_pipeline.core.vault.mirror.REPACK_AFTER_PACKS", 2)
    mirror = mirror_of(mirror_dir, archive(repo))
    dropped = repo.commit({"dropped.txt": "force-pushed away\n"})
    repo.push()
    archive(repo)
    assert len(list((mirror / "objects" / "pack").glob("*.pack"))) == 2
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    repo.commit({"c.txt": "c\n"})
    repo.push()

    result = archive(repo)

    assert len(list((mirror / "objects" / "pack").glob("*.pack"))) == 1
    missing = subprocess.run(["git", "cat-file", "-e", dropped], cwd=mirror, capture_output=True)
    assert missing.returncode != 0
    assert_archived_exactly(repo, result, tmp_path / "restored")


def snapshot_head(result: ArchiveResult) -> tuple[str | None, str | None, str | None]:
    manifest = SnapshotReader(open_store(Settings.from_env()), result.bucket).manifest(
        result.snapshot_id or ""
    )
    assert manifest is not None
    return manifest.head_commit, manifest.head_ref, manifest.default_branch


def test_a_head_moved_upstream_is_archived_as_a_fresh_clone_shows_it(
    mirror_dir: Path, repo: ServedRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive(repo)
    repo.commit({"c.txt": "c\n"})  # a ref moves too: else the run ends `unchanged`
    repo.push()
    tree = git(repo.bare, "rev-parse", "main^{tree}")
    old = git(repo.bare, "commit-tree", "-m", "on no branch", tree)
    git(repo.bare, "update-ref", "--no-deref", "HEAD", old)  # detached, on no branch or tag
    with caplog.at_level(logging.INFO):
        detached = archive(repo)
    assert snapshot_head(detached) == (old, "HEAD", None)
    assert "fetch failed" not in caplog.text
    assert restored(repo, tmp_path / "detached")[1] == old

    repo.commit({"d.txt": "d\n"})
    repo.push()  # HEAD on main again
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/gone")  # a branch the remote lacks
    with caplog.at_level(logging.INFO):
        unborn = archive(repo)
    assert "the remote's HEAD names no branch it has" in caplog.text  # only a clone knows it
    clone_refs, clone_head = fresh_clone(repo, tmp_path / "fresh.git")
    assert clone_head == "refs/heads/gone"
    newest = git(
        repo.bare, "for-each-ref", "--sort=-creatordate", "--count=1", "--format=%(refname)"
    )
    assert snapshot_head(unborn) == (clone_refs[newest], newest, None)
    assert ref_lines(mirror_of(mirror_dir, unborn)) == clone_refs
    assert git(mirror_of(mirror_dir, unborn), "symbolic-ref", "HEAD") == clone_head
