"""Get a repository back: which snapshot (`find_snapshot`: the latest complete one, or the one
asked for), rebuilt into the destination (`rebuild.fetch_snapshot`: bundle or chain, checked
against its manifest: each bundle's size and sha256, then every ref and HEAD) before anything
is checked out, then its LFS objects.

Any snapshot restores to a usable repository: all refs, HEAD where the snapshot had it. Files
git will not write (a crafted tree with `..` or `.git` entries, names the file system refuses)
are left out of the checkout, and the restore says so in one line.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    TransientError,
)
from repovault_pipeline.core.common.identity import (
    InvalidRepoUrl,
    RepoRef,
    bucket_name,
    parse_repo_id,
    parse_repo_url,
)
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import crypt, lfs
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.layout import CODE, WIKI
from repovault_pipeline.core.vault.localrepo import MODE_SYMLINK, LocalRepo
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.rebuild import (
    RestoreError,
    check_refs_and_head,
    fetch_snapshot,
    sealed_what,
)
from repovault_pipeline.core.vault.records import Manifest
from repovault_pipeline.core.vault.store import ObjectStore
from repovault_pipeline.core.vault.treekeys import path_bytes, unsafe_component

# Files git refuses as symlinks (they would let a checkout write outside the work tree).
_GIT_FILES = (".gitmodules", ".gitattributes", ".gitignore", ".mailmap")
MAX_PATH_BYTES = 4095


@dataclass(frozen=True)
class Restored:
    repo_id: str
    snapshot_id: str
    head_commit: str
    refs: int
    dest: Path
    note: str | None = None  # what could not be checked out, when something could not
    lfs_objects: int = 0  # LFS objects restored into .git/lfs/objects, each checked
    lfs_checked_out: bool = True  # False: git-lfs is not installed, LFS files are pointers
    lfs_missing_paths: tuple[str, ...] = ()  # files that stay pointers: objects never stored

    def warnings(self) -> list[str]:
        """What a person must know about the restored clone, one line each."""
        said = [self.note] if self.note else []
        if self.lfs_missing_paths:
            paths = self.lfs_missing_paths
            more = f" and {len(paths) - 20} more" if len(paths) > 20 else ""
            said.append(
                f"the snapshot is partial: {len(paths)} LFS files stay pointer files, their "
                f"objects were not on the server when it was taken: {', '.join(paths[:20])}{more}"
            )
        if self.lfs_objects and not self.lfs_checked_out:
            said.append(
                f"git-lfs is not installed: the {self.lfs_objects} LFS objects are in "
                f"{self.dest / '.git' / 'lfs'} but the LFS files are still pointer files; "
                f"install git-lfs (Debian package git-lfs), then run `git lfs install --local "
                f"&& git lfs checkout` in {self.dest}"
            )
        return said


def resolve_target(target: str, settings: Settings) -> RepoRef:
    """A URL (validated like a request) or a `repo_id` as `repovault list` prints it."""
    try:
        return parse_repo_url(target, settings.allowed_schemes, settings.allowed_hosts)
    except InvalidRepoUrl as url_error:
        if "://" in target or target.count("/") < 2:
            raise url_error
        return parse_repo_id(target)


def restore(
    settings: Settings,
    store: ObjectStore,
    ref: RepoRef,
    dest: Path,
    snapshot_id: str | None = None,
    wiki: bool = False,
) -> Restored:
    """The repository (or, with `wiki`, its wiki) from its latest snapshot or `snapshot_id`."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidRepoUrl(f"{dest} exists and is not empty; give a new or empty folder")
    found = find_snapshot(settings, store, ref, snapshot_id, wiki)
    reader, manifest, damage = found.reader, found.manifest, found.damage
    created = not dest.exists()
    try:
        done = _rebuild(settings, reader, manifest, dest)
        if damage:  # said first: the user asked for the latest and gets another one
            note = f"{damage}: restored that one; the next run repairs the pointer"
            done = replace(done, note="; ".join(filter(None, [note, done.note])))
        return done
    except RestoreError as exc:
        _leave_as_it_was(dest, created)
        advice = repair_advice(reader, manifest.snapshot_id, manifest.repo_url)
        raise RestoreError(f"{exc}; {advice}", exc.reason) from None
    except BaseException:
        _leave_as_it_was(dest, created)
        raise


@dataclass(frozen=True)
class Found:
    """The snapshot a restore rebuilds: its reader, its manifest, and why it is not the one
    `latest.json` names (`damage`: the pointer is damaged), when it is not."""

    reader: SnapshotReader[Manifest]
    manifest: Manifest
    damage: str | None = None


def find_snapshot(
    settings: Settings,
    store: ObjectStore,
    ref: RepoRef,
    snapshot_id: str | None = None,
    wiki: bool = False,
) -> Found:
    """The latest snapshot of `ref` (or of its wiki), or `snapshot_id`; `no_snapshot` when
    there is none, and a decryption key that cannot open it said before anything is
    downloaded."""
    bucket = bucket_name(ref.repo_id, settings.bucket_prefix)
    reader = SnapshotReader(store, bucket, WIKI if wiki else CODE)
    pointer = None if snapshot_id else reader.pointer()
    manifest = pointer.manifest if pointer else reader.manifest(snapshot_id or "")
    damage = pointer.damage if pointer else None
    if manifest is None:
        which = f"snapshot {snapshot_id}" if snapshot_id else "snapshot"
        which = f"wiki {which}" if wiki else which
        raise RestoreError(
            f"no {which} of {ref.repo_id} is stored"
            + (f" ({damage})" if damage else "")
            + "; `repovault list` shows what is",
            "no_snapshot",
        )
    # A key that cannot be used is said before a bundle of gigabytes is downloaded.
    crypt.require_identity(
        settings.decrypt_identity, crypt.Sealing.of(manifest), sealed_what(manifest)
    )
    return Found(reader, manifest, damage)


def _leave_as_it_was(dest: Path, created: bool) -> None:
    """A failed restore leaves nothing behind: DEST is as it was (absent or empty)."""
    shutil.rmtree(dest, ignore_errors=True)
    if not created:
        dest.mkdir(parents=True, exist_ok=True)


def repair_advice(reader: SnapshotReader, snapshot_id: str, repo_url: str) -> str:
    """What to do about a snapshot that does not restore: another stored snapshot, when there
    is one, and a forced run, which writes a fresh one from the source."""
    force = (
        "`repovault submit --force --wiki URL` (the repository's URL) writes a fresh one"
        if reader.layout is WIKI
        else f"`repovault submit --force {repo_url}` writes a fresh snapshot"
    )
    others = [s for s in reader.snapshot_ids()[0] if s != snapshot_id]
    if not others:
        return f"no other snapshot is stored: {force}"
    return f"restore another snapshot (--snapshot {others[0]} is the newest other), or {force}"


def _rebuild(
    settings: Settings, reader: SnapshotReader[Manifest], manifest: Manifest, dest: Path
) -> Restored:
    client = GitClient(settings)
    dest.mkdir(parents=True, exist_ok=True)
    client.run(["init", "--quiet", "--template=", str(dest)])
    repo = LocalRepo(dest, client)
    fetch_snapshot(reader, manifest, repo, settings.decrypt_identity)
    head = check_refs_and_head(repo, manifest)
    repo.git("remote", "add", "origin", manifest.repo_url)
    note = _checkout(repo, dest)
    restored = Restored(
        manifest.repo_id, manifest.snapshot_id, head, len(manifest.refs), dest, note=note
    )
    identity = settings.decrypt_identity
    return _restore_lfs(repo, reader.store, reader.bucket, manifest, restored, identity)


def _restore_lfs(
    repo: LocalRepo,
    store: ObjectStore,
    bucket: str,
    manifest: Manifest,
    restored: Restored,
    identity: Path | None,
) -> Restored:
    """The snapshot's LFS objects into `.git/lfs/objects`, each checked against its oid; then,
    with the LFS filter configured in the clone, `git lfs checkout` puts their content in place
    of the pointer files, offline. Without git-lfs the objects are in place for it, and the
    files whose objects the snapshot lacks stay pointers: both are said (`Restored.warnings`)."""
    count, missing = restore_lfs_objects(store, bucket, manifest, restored.dest / ".git", identity)
    checked_out = shutil.which("git-lfs") is not None
    if checked_out and count:
        repo.git("lfs", "install", "--local", "--skip-repo")
        repo.git("lfs", "checkout")
    return replace(
        restored, lfs_objects=count, lfs_checked_out=checked_out, lfs_missing_paths=missing
    )


def restore_lfs_objects(
    store: ObjectStore, bucket: str, manifest: Manifest, git_dir: Path, identity: Path | None
) -> tuple[int, tuple[str, ...]]:
    """The snapshot's LFS objects into `git_dir`'s LFS store, each checked against its oid:
    how many, and the paths of the files whose objects the snapshot lacks."""
    if manifest.lfs is None or not (manifest.lfs.objects or manifest.lfs.missing):
        return 0, ()
    index = SnapshotReader(store, bucket).lfs_index(manifest.snapshot_id)
    missing = tuple(sorted({p for names in index.missing_paths.values() for p in names}))
    try:
        count = lfs.restore(store, bucket, index, git_dir, identity, sealed_what(manifest))
    except (TransientError, crypt.NotDecryptable):
        raise
    except ArchiveError as exc:
        raise RestoreError(f"snapshot {manifest.snapshot_id}: {exc}") from None
    return count, missing


def _checkout(repo: LocalRepo, dest: Path) -> str | None:
    """Check HEAD's files out, leaving out those git must not write here. Returns a one-line
    note when something was left out, else None."""
    raw = repo.client.run(["ls-tree", "-r", "-z", "--full-tree", "HEAD"], cwd=dest)
    records = [r for r in raw.split(b"\0") if r]
    name_max = os.pathconf(dest, "PC_NAME_MAX")
    unsafe = [r for r in records if not _checkout_safe(r, name_max)]
    try:
        if not unsafe:
            repo.git("reset", "--quiet", "--hard")
            return None
        # `update-index --index-info` takes `ls-tree` records as they are.
        safe = b"".join(r + b"\0" for r in records if r not in unsafe)
        repo.client.run(["update-index", "-z", "--index-info"], cwd=dest, stdin=safe)
        repo.git("checkout-index", "--all", "--force")
    except ArchiveError:
        _clear_worktree(repo, dest)
        return (
            "every ref is restored, but git could not write HEAD's files in this folder: no "
            "files are checked out (see them with `git ls-tree -r HEAD`)"
        )
    first = unsafe[0].partition(b"\t")[2].decode("utf-8", "backslashreplace")
    return (
        f"every ref is restored; {len(unsafe)} of HEAD's {len(records)} files cannot be written "
        f"safely here and are not checked out (first: {first!r}); `git status` lists them as "
        "deleted, `git show HEAD:<path>` prints them"
    )


def _checkout_safe(record: bytes, name_max: int) -> bool:
    """What git's own path check accepts (no `..`, `.`, `.git` in any spelling, no symlinked
    `.gitmodules`...) and the file system can hold (component and path lengths)."""
    meta, _, raw = record.partition(b"\t")
    mode = meta.split(b" ", 1)[0].decode()
    path = raw.decode("utf-8", "surrogateescape")
    parts = path.split("/")
    if len(raw) > MAX_PATH_BYTES or any(
        unsafe_component(p) or len(path_bytes(p)) > name_max for p in parts
    ):
        return False
    last = parts[-1].lower().rstrip(" .")
    return not (mode == MODE_SYMLINK and last.startswith(_GIT_FILES))


def _clear_worktree(repo: LocalRepo, dest: Path) -> None:
    """An empty index and no files besides `.git`: nothing half checked out."""
    repo.git("read-tree", "--empty")
    for child in dest.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
