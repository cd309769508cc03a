"""Kept bare mirrors under REPOVAULT_MIRROR_DIR (`Mirrors`): a run fetches what changed into its
repository's mirror instead of cloning the whole history, then works on a private copy.

On disk, for each repository (named like its bucket, `-wiki` for its wiki):
  <dir>/<name>.git   a bare repository holding exactly what `git clone --bare` holds (branches,
                     tags, HEAD as the remote's), refreshed by `git fetch --prune`
  <dir>/<name>.lock  an `flock`: one process writes or copies a mirror at a time
A mirror is a cache: losing it costs one full clone. It is never trusted blindly: the marker
file `repovault-mirror` is written once a clone or fetch completed and removed before the next
one starts, so a mirror left by a run killed half way has none and is rebuilt by a fresh clone;
so is one `git fsck --connectivity-only` finds damaged (objects missing, a truncated pack). The
marker's mtime is the mirror's last use: mirrors idle past REPOVAULT_MIRROR_MAX_IDLE_D days are
removed by the sweep each run starts with.

The run gets a copy (`objects/` hard-linked when the work folder is on the same disk, else
copied; git never rewrites an object file in place), taken under the lock: a concurrent run's
fetch, repack or rebuild of the mirror never changes what this run bundles and lists.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    RepoNotFound,
    TransientError,
    WorkDirFull,
)
from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.vault.gitops import GitClient, RemoteState
from repovault_pipeline.core.vault.localrepo import LocalRepo, parse_fsck

MARKER = "repovault-mirror"
DAY_S = 86400
LOCK_POLL_S = 0.2
# More packs than this after a fetch: repack into one (dropping what no ref reaches any more,
# e.g. history force-pushed away), so lookups stay fast and the mirror the size of a clone.
REPACK_AFTER_PACKS = 16
# What a clone stores: every branch and tag, nothing else (no pull requests, no notes).
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# Kept in the mirror's own config: small fetches land in a pack (not thousands of loose
# objects), and git never repacks in the background while another run copies the mirror.
MIRROR_CONFIG = {"fetch.unpackLimit": "1", "gc.auto": "0", "maintenance.auto": "false"}
# A failed fetch that says nothing of the repository fetched into (a mirror, a seeded clone):
# rebuilding it or cloning afresh would fail the same way.
REMOTE_FAILURES = (TransientError, RepoNotFound, GitTimeout, WorkDirFull)


class Mirrors:
    """The mirrors of REPOVAULT_MIRROR_DIR, fetched, checked, copied and swept with `git`'s
    hardened environment (credentials, allowed transports, size cap, timeouts)."""

    def __init__(self, git: GitClient, root: Path, max_idle_d: int) -> None:
        self.git = git
        self.root = root
        self.max_idle_s = max_idle_d * DAY_S
        self.log = git.log

    def copy(self, ref: RepoRef, name: str, remote: RemoteState, dest: Path) -> LocalRepo:
        """`dest`: a bare repository holding what a fresh clone of `ref` would, made from the
        mirror `name` refreshed from the remote (`remote`: what ls-remote just said of HEAD).
        Waits for another run's turn at most REPOVAULT_GIT_TIMEOUT_S, then clones afresh."""
        mirror = self.root / f"{name}.git"
        with _locked(self.root / f"{name}.lock", self.git.settings.git_timeout_s) as held:
            if not held:
                self.log.warning("mirror %s stayed busy: cloning %s afresh", mirror, ref.url)
                return self.git.clone(ref, dest)
            self._refresh(ref, mirror, remote)
            dest.parent.mkdir(parents=True, exist_ok=True)
            objects = f"{mirror / 'objects'}{os.sep}"
            shutil.copytree(
                mirror,
                dest,
                copy_function=lambda src, dst: _link_or_copy(src, dst, src.startswith(objects)),
                ignore=_not_copied,
            )
        return LocalRepo(dest, self.git)

    def _refresh(self, ref: RepoRef, mirror: Path, remote: RemoteState) -> None:
        """Fetch into a sound mirror; clone a missing or untrustworthy one afresh."""
        damage = self.damage(mirror)
        if damage is None:
            try:
                self._fetch(ref, mirror, remote)
                return
            except REMOTE_FAILURES:
                raise
            except ArchiveError as exc:  # a bloated or damaged mirror, a HEAD fetch cannot set
                damage = f"its fetch failed ({exc})"
        if mirror.exists():
            self.log.warning("mirror %s %s: rebuilding it by a fresh clone", mirror, damage)
        shutil.rmtree(mirror, ignore_errors=True)
        repo = self.git.clone(ref, mirror)
        for key, value in MIRROR_CONFIG.items():
            repo.git("config", key, value)
        (mirror / MARKER).touch()

    def damage(self, mirror: Path) -> str | None:
        """Why `mirror` cannot be fetched into (missing, left half-written, objects missing or
        unreadable); None: it is sound."""
        if not mirror.is_dir():
            return "does not exist yet"
        if not (mirror / MARKER).is_file():
            return "was left half-written"
        code, stdout, stderr = self.git.run_status(
            ["fsck", "--connectivity-only", "--no-dangling", "--no-progress"], cwd=mirror
        )
        report = parse_fsck(stdout.decode(errors="replace") + "\n" + stderr, code)
        if code != 0 or report.damage:
            return f"is damaged ({(report.damage or ['git fsck failed'])[0]})"
        return None

    def _fetch(self, ref: RepoRef, mirror: Path, remote: RemoteState) -> None:
        """Fetch what changed (`fetch_remote`) between removing the marker and writing it
        again; repack a mirror grown many packs."""
        (mirror / MARKER).unlink()
        self.log.info("fetching %s into its mirror %s", ref.url, mirror)
        repo = fetch_remote(self.git, ref, mirror, remote)
        if len(list((mirror / "objects" / "pack").glob("*.pack"))) > REPACK_AFTER_PACKS:
            repo.git("repack", "-a", "-d", "-q")
        (mirror / MARKER).touch()

    def sweep(self) -> list[Path]:
        """Remove the mirrors unused for REPOVAULT_MIRROR_MAX_IDLE_D days (and the locks of
        mirrors gone), each under its lock; one in use is left alone. Returns what went."""
        if not self.root.is_dir():
            return []
        removed = []
        now = time.time()
        for name in sorted({p.name.rsplit(".", 1)[0] for p in self.root.glob("*.lock")}):
            mirror, lock = self.root / f"{name}.git", self.root / f"{name}.lock"
            if now - _last_use(mirror, lock) <= self.max_idle_s:
                continue
            with _locked(lock, 0) as held:
                if held:
                    shutil.rmtree(mirror, ignore_errors=True)
                    lock.unlink(missing_ok=True)
                    removed.append(mirror)
        if removed:
            self.log.info("removed %d mirror(s) unused for a while: %s", len(removed), removed)
        return removed


def fetch_remote(git: GitClient, ref: RepoRef, path: Path, remote: RemoteState) -> LocalRepo:
    """`git fetch --prune` of every branch and tag of `ref` into the bare repository `path`
    (deleted ones go, force-pushed ones move), HEAD set as a clone sets it (`remote`: what
    ls-remote said of HEAD): its branches, tags and HEAD are then what a fresh `git clone
    --bare` shows. Used on a kept mirror and on a clone seeded from the vault (core/vault/seed.py).
    """
    # A detached HEAD's commit may be on no branch or tag: a clone takes it all the same.
    detached = ("HEAD",) if remote.default_branch is None and remote.head else ()
    fetch = ["fetch", "--prune", "--no-auto-maintenance", "--progress", "--", ref.url]
    git.run([*fetch, *REFSPECS, *detached], ref=ref, cwd=path, watch=path)
    repo = LocalRepo(path, git)
    if remote.default_branch is not None:
        repo.git("symbolic-ref", "HEAD", f"refs/heads/{remote.default_branch}")
    elif remote.head is not None:
        repo.git("update-ref", "--no-deref", "HEAD", remote.head)
    elif git.run_status(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=path)[0] == 0:
        # The remote's HEAD names a branch it lacks: only a clone learns that branch's name.
        raise ArchiveError("the remote's HEAD names no branch it has")
    return repo


def _last_use(mirror: Path, lock: Path) -> float:
    """When a run last used the mirror: its marker's mtime (else the folder's, else the lock's:
    a mirror half-written or never made)."""
    for path in (mirror / MARKER, mirror, lock):
        with suppress(FileNotFoundError):
            return path.stat().st_mtime
    return 0.0


@contextmanager
def _locked(lock: Path, wait_s: float) -> Iterator[bool]:
    """Hold `lock` exclusively (True), or give up after `wait_s` (False). The kernel lets go
    when the process dies, however it dies. A lock file the sweep removed while this waited is
    not the mirror's lock any more: taken again from its path."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(LOCK_POLL_S)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.utime(lock)
        yield True
    finally:
        os.close(fd)


def _link_or_copy(src: str, dst: str, link: bool) -> None:
    """Object files are hard-linked (`link`: git writes them once and never in place);
    everything else (refs, HEAD, config: rewritten by a later fetch) is copied."""
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another disk, or links not allowed there
            pass
    shutil.copy2(src, dst)


def _not_copied(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in (MARKER, "FETCH_HEAD")}
