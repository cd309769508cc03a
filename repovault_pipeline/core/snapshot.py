"""The snapshot writer (SPEC "Object layout"): bundle, incremental `tree/`, manifest, `latest.json`.

Order of writes is the safety argument: the bundle and `tree/` first, `tree.json` and
`manifest.json` next (the manifest is the commit marker), `latest.json` only then, retention
last. A run that dies anywhere before the manifest leaves readers on the previous snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from .errors import ArchiveError
from .gitops import GitClient, LocalRepo, TreeEntry
from .identity import RepoRef, bucket_name
from .redact import mask_secrets
from .settings import Settings
from .store import ObjectStore, ParallelUploader

log = logging.getLogger(__name__)

LATEST_KEY = "latest.json"
SNAPSHOTS = "snapshots/"
TREE = "tree/"
MANIFEST = "manifest.json"
BUNDLE = "repo.bundle"
TREE_INDEX = "tree.json"
IN_MEMORY_BLOB = 1024 * 1024
STALE_WORK_DIR_S = 24 * 3600


def snapshot_key(snapshot_id: str, name: str) -> str:
    return f"{SNAPSHOTS}{snapshot_id}/{name}"


def new_snapshot_id(head_commit: str, previous: str | None = None) -> str:
    """`<UTC yyyymmddTHHMMSSZ>-<12 hex of HEAD>`, strictly after `previous` so that ids sort in
    the order snapshots were taken (two runs within one second wait for the next)."""
    while True:
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        if previous is None or stamp > previous.split("-", 1)[0]:
            return f"{stamp}-{head_commit[:12]}"
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)


@dataclass
class Prepared:
    """A clone on local disk, bundled, with its HEAD tree listed: ready to upload.

    `work_dir` is None when the remote matched the latest snapshot and nothing was cloned.
    """

    repo_id: str
    repo_url: str
    bucket: str
    head_commit: str
    default_branch: str
    refs: dict[str, str]
    work_dir: Path | None = None
    snapshot_id: str | None = None
    previous_snapshot_id: str | None = None
    started_at: float = field(default_factory=time.time)
    clone_s: float = 0.0
    request_id: str | None = None  # written into the manifest: reconcile recognises its snapshot
    run_id: str | None = None

    @property
    def unchanged(self) -> bool:
        return self.work_dir is None

    @property
    def bundle_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / BUNDLE

    @property
    def repo_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "repo.git"


@dataclass
class ArchiveResult:
    """What a run did, for lineage, metadata and the CLI."""

    repo_id: str
    repo_url: str
    bucket: str
    outcome: str  # "completed" or "unchanged"
    snapshot_id: str | None
    head_commit: str
    default_branch: str
    bytes_uploaded: int = 0
    files_uploaded: int = 0
    files_deleted: int = 0
    tree_files: int = 0
    tree_bytes: int = 0
    bundle_size: int = 0
    snapshots_deleted: int = 0
    clone_s: float = 0.0
    upload_s: float = 0.0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SnapshotReader:
    """What readers see of one bucket: only snapshots whose manifest exists."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def _json(self, key: str) -> dict | None:
        raw = self.store.get_bytes(self.bucket, key)
        return json.loads(raw) if raw is not None else None

    def latest(self) -> dict | None:
        """The manifest `latest.json` points at, or None for a repository never archived."""
        pointer = self._json(LATEST_KEY)
        return self.manifest(pointer["snapshot_id"]) if pointer else None

    def manifest(self, snapshot_id: str) -> dict | None:
        return self._json(snapshot_key(snapshot_id, MANIFEST))

    def tree_index(self, snapshot_id: str) -> dict[str, dict]:
        return (self._json(snapshot_key(snapshot_id, TREE_INDEX)) or {}).get("files", {})

    def snapshot_ids(self) -> tuple[list[str], list[str]]:
        """(complete, incomplete) snapshot ids, newest first."""
        keys: dict[str, set[str]] = {}
        for info in self.store.list(self.bucket, SNAPSHOTS):
            snap, _, name = info.key[len(SNAPSHOTS) :].partition("/")
            keys.setdefault(snap, set()).add(name)
        ordered = sorted(keys, reverse=True)
        return (
            [s for s in ordered if MANIFEST in keys[s]],
            [s for s in ordered if MANIFEST not in keys[s]],
        )


def write_tree_index(path: Path, head_commit: str, entries: list[TreeEntry]) -> None:
    """`tree.json` written entry by entry, so a tree of a million files is never held in
    memory as one JSON document: `{"files": {path: {mode, sha, size}}, "head_commit": ...}`."""
    with path.open("w", encoding="ascii") as out:
        out.write('{\n "files": {')
        for n, entry in enumerate(entries):
            meta = json.dumps({"mode": entry.mode, "sha": entry.sha, "size": entry.size})
            out.write(f"{',' if n else ''}\n  {json.dumps(entry.path)}: {meta}")
        out.write(f'\n }},\n "head_commit": {json.dumps(head_commit)}\n}}\n')


class SnapshotWriter:
    """Archives one repository into its bucket."""

    def __init__(
        self, settings: Settings, store: ObjectStore, logger: logging.Logger | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.log = logger or log
        self.git = GitClient(settings, self.log)

    def prepare(
        self,
        ref: RepoRef,
        work_dir: Path | None = None,
        *,
        request_id: str | None = None,
        run_id: str | None = None,
    ) -> Prepared:
        """Clone, bundle and list HEAD, unless the remote's refs equal the latest manifest's.

        The clone goes to `work_dir` (emptied first) or to a fresh folder under
        REPOVAULT_WORK_DIR.
        """
        started = time.time()
        bucket = bucket_name(ref.repo_id, self.settings.bucket_prefix)
        latest = SnapshotReader(self.store, bucket).latest()
        remote = self.git.ls_remote(ref)
        if _matches(latest, remote.refs, remote.default_branch):
            self.log.info("%s unchanged since snapshot %s", ref.repo_id, latest["snapshot_id"])
            return self._unchanged(ref, bucket, latest, started)
        if not remote.refs:
            raise ArchiveError("the repository is empty: it has no branch or tag to archive")

        work_dir = make_work_dir(self.settings.work_dir, bucket, work_dir)
        try:
            repo = self.git.clone(ref, work_dir / "repo.git")
            refs = repo.refs()
            if _matches(latest, refs, repo.default_branch()):
                remove_work_dir(work_dir)
                return self._unchanged(ref, bucket, latest, started)
            head = repo.head_commit()
            clone_done = time.time()
            self.log.info("cloned %s: %d refs, HEAD %s", ref.repo_id, len(refs), head[:12])
            repo.create_bundle(work_dir / BUNDLE)
        except BaseException:
            remove_work_dir(work_dir)
            raise
        return Prepared(
            repo_id=ref.repo_id,
            repo_url=mask_secrets(ref.url),
            bucket=bucket,
            head_commit=head,
            default_branch=repo.default_branch(),
            refs=refs,
            work_dir=work_dir,
            snapshot_id=new_snapshot_id(head, latest["snapshot_id"] if latest else None),
            previous_snapshot_id=latest["snapshot_id"] if latest else None,
            started_at=started,
            clone_s=clone_done - started,
            request_id=request_id,
            run_id=run_id,
        )

    def _unchanged(self, ref: RepoRef, bucket: str, latest: dict, started: float) -> Prepared:
        return Prepared(
            repo_id=ref.repo_id,
            repo_url=mask_secrets(ref.url),
            bucket=bucket,
            head_commit=latest["head_commit"],
            default_branch=latest["default_branch"],
            refs=latest["refs"],
            snapshot_id=latest["snapshot_id"],
            started_at=started,
            clone_s=time.time() - started,
        )

    def upload(self, prepared: Prepared) -> ArchiveResult:
        """Write the snapshot in commit order, move `latest.json`, apply retention."""
        result = ArchiveResult(
            repo_id=prepared.repo_id,
            repo_url=prepared.repo_url,
            bucket=prepared.bucket,
            outcome="unchanged" if prepared.unchanged else "completed",
            snapshot_id=prepared.snapshot_id,
            head_commit=prepared.head_commit,
            default_branch=prepared.default_branch,
            clone_s=round(prepared.clone_s, 3),
        )
        if prepared.unchanged:
            result.duration_s = round(time.time() - prepared.started_at, 3)
            return result
        upload_started = time.time()
        snapshot_id = prepared.snapshot_id
        assert snapshot_id is not None
        reader = SnapshotReader(self.store, prepared.bucket)
        self.store.ensure_bucket(prepared.bucket)
        repo = LocalRepo(prepared.repo_path, self.git)
        entries, submodules = repo.tree(prepared.head_commit)

        uploader = ParallelUploader(
            self.store, prepared.bucket, self.settings.upload_workers, logger=self.log
        )
        try:
            bundle = prepared.bundle_path
            result.bundle_size = bundle.stat().st_size
            uploader.put_file(snapshot_key(snapshot_id, BUNDLE), bundle)
            bundle_sha256 = file_sha256(bundle)
            previous = (
                reader.tree_index(prepared.previous_snapshot_id)
                if prepared.previous_snapshot_id
                else {}
            )
            sync = self._sync_tree(repo, entries, previous, uploader, prepared.work_dir)
            result.bytes_uploaded = uploader.wait()
        finally:
            uploader.close()
        result.files_uploaded = sync.uploaded
        result.files_deleted = sync.deleted
        result.tree_files = len(entries)
        result.tree_bytes = sum(e.size for e in entries)

        index = prepared.bundle_path.with_name(TREE_INDEX)
        write_tree_index(index, prepared.head_commit, entries)
        self.store.put_file(
            prepared.bucket,
            snapshot_key(snapshot_id, TREE_INDEX),
            index,
            content_type="application/json",
        )
        result.bytes_uploaded += index.stat().st_size
        result.duration_s = round(time.time() - prepared.started_at, 3)
        manifest = {
            "repo_id": prepared.repo_id,
            "repo_url": prepared.repo_url,
            "snapshot_id": snapshot_id,
            "head_commit": prepared.head_commit,
            "default_branch": prepared.default_branch,
            "refs": prepared.refs,
            "bundle": {
                "key": snapshot_key(snapshot_id, BUNDLE),
                "size": result.bundle_size,
                "sha256": bundle_sha256,
            },
            "tree": {
                "files": result.tree_files,
                "bytes": result.tree_bytes,
                "index": snapshot_key(snapshot_id, TREE_INDEX),
            },
            "submodules": submodules,
            "created_at": datetime.now(UTC).isoformat(),
            "duration_s": result.duration_s,
            "repovault_version": __version__,
            "request_id": prepared.request_id,
            "run_id": prepared.run_id,
        }
        result.bytes_uploaded += self._put_json(
            prepared.bucket, snapshot_key(snapshot_id, MANIFEST), manifest
        )
        latest = {
            "repo_id": prepared.repo_id,
            "snapshot_id": snapshot_id,
            "manifest": snapshot_key(snapshot_id, MANIFEST),
            "head_commit": prepared.head_commit,
            "created_at": manifest["created_at"],
        }
        result.bytes_uploaded += self._put_json(prepared.bucket, LATEST_KEY, latest)
        result.snapshots_deleted = self._apply_retention(reader, snapshot_id)
        result.upload_s = round(time.time() - upload_started, 3)
        self.log.info(
            "snapshot %s of %s: %d files uploaded, %d deleted, %.1f MB",
            snapshot_id,
            prepared.repo_id,
            sync.uploaded,
            sync.deleted,
            result.bytes_uploaded / 1e6,
        )
        return result

    def archive(self, ref: RepoRef) -> ArchiveResult:
        """prepare + upload + clean up: the whole archive of one repository."""
        prepared = self.prepare(ref)
        try:
            return self.upload(prepared)
        finally:
            discard(prepared)

    def _put_json(self, bucket: str, key: str, doc: dict) -> int:
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        self.store.put_bytes(bucket, key, data, content_type="application/json")
        return len(data)

    def _sync_tree(
        self,
        repo: LocalRepo,
        entries: list[TreeEntry],
        previous: dict[str, dict],
        uploader: ParallelUploader,
        work_dir: Path | None,
    ) -> _TreeSync:
        """Upload what changed since the previous snapshot (or is missing), delete what is gone."""
        existing = {info.key: info.size for info in self.store.list(uploader.bucket, TREE)}
        wanted = {TREE + e.path for e in entries}
        todo = [
            e for e in entries if _changed(e, previous.get(e.path), existing.get(TREE + e.path))
        ]
        sync = _TreeSync(uploaded=len(todo))
        for entry, blob in zip(todo, repo.blobs([e.sha for e in todo]), strict=True):
            key = TREE + entry.path
            metadata = {"git-mode": entry.mode, "git-blob": entry.sha}
            if entry.is_symlink:
                metadata["repovault-type"] = "symlink"
                content_type = "inode/symlink"
            else:
                content_type = mimetypes.guess_type(entry.path)[0] or "application/octet-stream"
            if entry.size <= IN_MEMORY_BLOB:
                uploader.put_bytes(key, blob.read(), metadata=metadata, content_type=content_type)
            else:
                fd, name = tempfile.mkstemp(dir=work_dir, prefix="blob-")
                with os.fdopen(fd, "wb") as out:
                    blob.copy_to(out)
                uploader.put_file(
                    key, Path(name), remove_after=True, metadata=metadata, content_type=content_type
                )
        stale = sorted(set(existing) - wanted)
        if stale:
            self.store.delete(uploader.bucket, stale)
        sync.deleted = len(stale)
        return sync

    def _apply_retention(self, reader: SnapshotReader, current: str) -> int:
        """Keep the newest REPOVAULT_KEEP_SNAPSHOTS complete snapshots; drop older leftovers."""
        complete, incomplete = reader.snapshot_ids()
        doomed = complete[self.settings.keep_snapshots :]
        doomed += [s for s in incomplete if s < current]
        for snap in doomed:
            # The manifest goes first so a half-deleted snapshot is already invisible.
            self.store.delete(reader.bucket, [snapshot_key(snap, MANIFEST)])
            rest = [i.key for i in self.store.list(reader.bucket, f"{SNAPSHOTS}{snap}/")]
            self.store.delete(reader.bucket, rest)
        if doomed:
            self.log.info("retention: deleted snapshots %s", ", ".join(doomed))
        return len([s for s in doomed if s in complete])


def _matches(latest: dict | None, refs: dict[str, str], default_branch: str | None) -> bool:
    """The remote is what the latest snapshot holds: same branches and tags, same HEAD branch
    (a server that does not advertise HEAD's branch is judged on its refs)."""
    return (
        latest is not None
        and refs == latest["refs"]
        and default_branch in (None, latest["default_branch"])
    )


def _changed(entry: TreeEntry, before: dict | None, stored_size: int | None) -> bool:
    """Upload unless the previous snapshot had this blob and mode and the object is in place."""
    return not (
        before is not None
        and before.get("sha") == entry.sha
        and before.get("mode") == entry.mode
        and stored_size == entry.size
    )


@dataclass
class _TreeSync:
    uploaded: int = 0
    deleted: int = 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_work_dir(root: Path, label: str, path: Path | None = None) -> Path:
    """An empty private folder for one clone; leftovers of crashed runs older than a day are
    swept."""
    root.mkdir(parents=True, exist_ok=True)
    for old in _stale(root):
        remove_work_dir(old)
    path = path or root / f"{label}-{uuid.uuid4().hex[:12]}"
    remove_work_dir(path)
    path.mkdir(parents=True)
    return path


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _stale(root: Path) -> Iterator[Path]:
    cutoff = time.time() - STALE_WORK_DIR_S
    for child in root.iterdir():
        try:
            if child.is_dir() and child.stat().st_mtime < cutoff:
                yield child
        except FileNotFoundError:
            continue


def discard(prepared: Prepared) -> None:
    """Remove a prepared clone from local disk."""
    if prepared.work_dir is not None:
        remove_work_dir(prepared.work_dir)


def archived_repositories(store: ObjectStore, prefix: str) -> Iterator[dict]:
    """The latest complete manifest of every repository bucket; half-written ones are skipped."""
    for bucket in store.list_buckets(prefix):
        manifest = SnapshotReader(store, bucket).latest()
        if manifest is not None:
            yield {**manifest, "bucket": bucket}
