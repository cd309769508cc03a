"""Get a repository back: a clone rebuilt from a stored bundle (an incremental one: from its
chain, the full bundle first), checked against its manifest (each bundle's size and sha256, then
every ref and HEAD) before anything is checked out.

Any snapshot restores to a usable repository: all refs, HEAD where the snapshot had it. Files
git will not write (a crafted tree with `..` or `.git` entries, names the file system refuses)
are left out of the checkout, and the restore says so in one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    TransientError,
    WorkDirFull,
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
from repovault_pipeline.core.vault.chain import BrokenChain, chain_of
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.layout import CODE, WIKI
from repovault_pipeline.core.vault.localrepo import MODE_SYMLINK, LocalRepo
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256
from repovault_pipeline.core.vault.treekeys import path_bytes, unsafe_component

# Files git refuses as symlinks (they would let a checkout write outside the work tree).
_GIT_FILES = (".gitmodules", ".gitattributes", ".gitignore", ".mailmap")
MAX_PATH_BYTES = 4095
CHAIN_DOWNLOADS = 4  # a chain's bundles downloaded at once


class RestoreError(ArchiveError):
    """The snapshot cannot be restored or does not match its manifest. `reason` names the
    failure in a word (`bundle_tampered`, `refs_disagree`...) for checks and dashboards."""

    def __init__(self, message: str, reason: str = "unrestorable") -> None:
        super().__init__(message)
        self.reason = reason


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


def sealed_what(manifest: Manifest) -> str:
    """How errors about an encrypted snapshot name it."""
    return f"snapshot {manifest.snapshot_id} of {manifest.repo_id}"


def fetch_snapshot(
    reader: SnapshotReader[Manifest],
    manifest: Manifest,
    repo: LocalRepo,
    identity: Path | None = None,
) -> None:
    """The snapshot's objects and refs into `repo` (a new, empty repository): its bundle, or,
    for an incremental one (`base`), its chain's bundles from the full one on, each checked
    against its own manifest and unbundled in order without refs; then exactly the manifest's
    refs are set and git checks that every object they reach is there. A link that is missing
    or does not match fails `chain_broken`, naming it."""
    if manifest.base is None:
        fetch_bundle(reader.store, reader.bucket, manifest, repo, identity)
        return
    links = chain_links(reader, manifest)
    with (
        tempfile.TemporaryDirectory(prefix="repovault-restore-") as tmp,
        ThreadPoolExecutor(CHAIN_DOWNLOADS) as pool,
    ):
        # Downloaded side by side (each link is a round trip or more), unbundled in order.
        bundles = [
            pool.submit(_downloaded, reader.store, reader.bucket, link, Path(tmp, str(n)), identity)
            for n, link in enumerate(links)
        ]
        n = 0
        try:
            for n, link in enumerate(links):
                _check_carried(_unbundle_link(repo, bundles[n].result(), link), link)
        except RestoreError as exc:
            for later in bundles:
                later.cancel()
            if n == len(links) - 1:
                raise
            raise broken_link(links, n, exc) from None
    _set_refs(repo, manifest)
    _check_connected(repo, manifest)


def chain_links(reader: SnapshotReader[Manifest], manifest: Manifest) -> list[Manifest]:
    """The manifests whose bundles rebuild the snapshot, its chain's full bundle first and the
    snapshot last (one for a full bundle); a base gone fails `chain_broken`."""
    try:
        return chain_of(reader, manifest)
    except BrokenChain as exc:
        raise RestoreError(str(exc), "chain_broken") from None


def broken_link(links: list[Manifest], n: int, exc: RestoreError) -> RestoreError:
    """The failure of link `n` (not the last) of a chain: `chain_broken`, naming the link, the
    snapshot building on it and the snapshot the chain rebuilds."""
    return RestoreError(
        f"snapshot {links[n].snapshot_id} (base of {links[n + 1].snapshot_id}) in the chain "
        f"of snapshot {links[-1].snapshot_id}: {exc}",
        "chain_broken",
    )


def _check_carried(carried: dict[str, str], link: Manifest) -> None:
    """The branches and tags a link's bundle carried are its manifest's, at its shas: all of
    them for a full bundle, those that moved for an incremental one."""
    if link.base is None:
        _check_refs(carried, link)
        return
    for name, sha in sorted(carried.items()):
        if link.refs.get(name) != sha:
            raise RestoreError(
                f"ref {name} is {_short(sha)} in the bundle of snapshot {link.snapshot_id} but "
                f"{_short(link.refs.get(name))} in its manifest",
                "refs_disagree",
            )


def _set_refs(repo: LocalRepo, manifest: Manifest) -> None:
    """Exactly the manifest's branches and tags, in one transaction. A ref whose object no
    link brought fails `chain_broken`."""
    lacking = repo.missing(set(manifest.refs.values()))
    if lacking:
        name = min(n for n, sha in manifest.refs.items() if sha in lacking)
        raise RestoreError(
            f"ref {name} of snapshot {manifest.snapshot_id} is {_short(manifest.refs[name])}, "
            f"which no bundle of its chain holds ({len(lacking)} ref tips missing)",
            "chain_broken",
        )
    commands = "".join(f"create {name} {sha}\n" for name, sha in sorted(manifest.refs.items()))
    repo.client.run(["update-ref", "--stdin"], cwd=repo.path, stdin=commands.encode())


def _check_connected(repo: LocalRepo, manifest: Manifest) -> None:
    """Every object the refs reach is in `repo`: the check `git fetch` makes of what it
    received, made once for the whole chain (its links were unbundled without refs)."""
    try:
        repo.git("rev-list", "--objects", "--quiet", "--all")
    except TransientError:
        raise
    except ArchiveError as exc:
        raise RestoreError(
            f"the chain of snapshot {manifest.snapshot_id} lacks objects its refs need: {exc}",
            "chain_broken",
        ) from None


def fetch_bundle(
    store: ObjectStore,
    bucket: str,
    manifest: Manifest,
    repo: LocalRepo,
    identity: Path | None = None,
) -> None:
    """Download the snapshot's bundle, check it byte for byte against the manifest (the stored
    ciphertext, when encrypted: then decrypted with `identity`, `crypt.NotDecryptable` when it
    cannot be), check it is a valid bundle, and fetch all its refs into `repo` (a new, empty
    repository)."""
    with tempfile.TemporaryDirectory(prefix="repovault-restore-") as tmp:
        bundle = _downloaded(store, bucket, manifest, Path(tmp), identity)
        _unbundle(repo, bundle, manifest)


def _downloaded(
    store: ObjectStore, bucket: str, manifest: Manifest, folder: Path, identity: Path | None
) -> Path:
    """The snapshot's bundle in `folder`, checked against its manifest and decrypted."""
    snapshot = manifest.snapshot_id
    key = manifest.bundle.key
    sealed = crypt.Sealing.of(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "repo.bundle"
    stored = bundle.with_name(bundle.name + crypt.AGE_SUFFIX) if sealed else bundle
    try:
        store.download(bucket, key, stored)
    except TransientError:
        raise
    except ArchiveError as exc:
        raise RestoreError(
            f"{key} of snapshot {snapshot} cannot be read: {exc}", "bundle_unreadable"
        ) from None
    _check_bundle(stored, manifest)
    if sealed is not None:
        try:
            crypt.decrypt_file(identity, sealed, sealed_what(manifest), stored, bundle)
        except crypt.DecryptFailed as exc:
            raise RestoreError(str(exc), "bundle_undecryptable") from None
        stored.unlink()
    return bundle


def _unbundle(repo: LocalRepo, bundle: Path, manifest: Manifest) -> None:
    """Fetch all the bundle's refs into `repo`; git checks the bundle as it fetches it, and
    what it received for connectivity."""
    # The bundle is a local file we downloaded and checked: allow the file transport here only.
    try:
        repo.client.run(
            [
                "fetch",
                "--quiet",
                "--update-head-ok",
                "--no-write-fetch-head",
                "--no-auto-maintenance",
                "--",
                str(bundle),
                "refs/*:refs/*",
            ],
            cwd=repo.path,
            protocols=("file",),
        )
    except (GitTimeout, WorkDirFull):
        raise
    except ArchiveError as exc:  # a local file: git's "early EOF" here is no network trouble
        raise _invalid(repo, bundle, manifest, exc) from None


def _unbundle_link(repo: LocalRepo, bundle: Path, link: Manifest) -> dict[str, str]:
    """A link's objects into `repo`, no ref written (`git bundle unbundle`: its base's
    commits must be there, brought by the links before it); the branches and tags it
    carries. One git command a link: `_check_connected` checks the whole chain after."""
    try:
        out = repo.git("bundle", "unbundle", str(bundle))
    except (GitTimeout, WorkDirFull):
        raise
    except ArchiveError as exc:  # a local file: git's "early EOF" here is no network trouble
        raise _invalid(repo, bundle, link, exc) from None
    pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: sha for sha, name in pairs if name.startswith(("refs/heads/", "refs/tags/"))}


def _invalid(repo: LocalRepo, bundle: Path, manifest: Manifest, exc: ArchiveError) -> RestoreError:
    """Why git could not take a bundle that matched its manifest: not a bundle at all (or
    lacking its base's commits), as `git bundle verify` says, or not unpackable."""
    key, snapshot = manifest.bundle.key, manifest.snapshot_id
    try:
        repo.git("bundle", "verify", "--quiet", str(bundle))
    except ArchiveError:
        return RestoreError(
            f"{key} of snapshot {snapshot} is not a valid git bundle although it matches "
            "its manifest's size and sha256"
            + (" (or lacks the commits of its base it builds on)" if manifest.base else ""),
            "bundle_invalid",
        )
    return RestoreError(f"{key} of snapshot {snapshot} cannot be unpacked: {exc}", "bundle_invalid")


def check_refs_and_head(repo: LocalRepo, manifest: Manifest) -> str:
    """Every ref of the manifest is in `repo` at its sha; point HEAD where the snapshot had it
    and return its commit, which must be the manifest's `head_commit`."""
    _check_refs(repo.refs(), manifest)
    if manifest.default_branch:
        repo.git("symbolic-ref", "HEAD", f"refs/heads/{manifest.default_branch}")
    else:  # no branch at HEAD (tags only, or a detached HEAD): HEAD is the snapshot's commit
        try:
            repo.git("update-ref", "--no-deref", "HEAD", manifest.head_commit)
        except ArchiveError:
            raise RestoreError(
                f"the bundle of snapshot {manifest.snapshot_id} lacks its manifest's HEAD "
                f"commit {manifest.head_commit[:12]}",
                "head_mismatch",
            ) from None
    try:
        head = repo.head_commit()
    except ArchiveError:
        head = ""
    if head != manifest.head_commit:
        raise RestoreError(
            f"HEAD of the restored clone is {_short(head or None)} but snapshot "
            f"{manifest.snapshot_id}'s manifest says {manifest.head_commit[:12]}",
            "head_mismatch",
        )
    return head


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


def _check_bundle(bundle: Path, manifest: Manifest) -> None:
    """The downloaded bundle is the one the manifest describes, byte for byte."""
    where = f"{manifest.bundle.key} of snapshot {manifest.snapshot_id}"
    size = bundle.stat().st_size
    if size != manifest.bundle.size:
        raise RestoreError(
            f"{where} is {size} bytes but its manifest says {manifest.bundle.size}: "
            "the download was cut short or the object was replaced",
            "bundle_size_mismatch",
        )
    if file_sha256(bundle) != manifest.bundle.sha256:
        raise RestoreError(
            f"{where} fails its sha256 check: the stored bundle is not the one archived",
            "bundle_tampered",
        )


def _check_refs(restored: dict[str, str], manifest: Manifest) -> None:
    """Every branch and tag of the manifest, at its sha, and no other."""
    expected = manifest.refs
    for name in sorted(set(restored) | set(expected)):
        have, want = restored.get(name), expected.get(name)
        if have != want:
            raise RestoreError(
                f"ref {name} is {_short(have)} in the restored bundle but {_short(want)} in the "
                f"manifest of snapshot {manifest.snapshot_id}",
                "refs_disagree",
            )


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "missing"


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
