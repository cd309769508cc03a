"""`tree/`, HEAD's files browsable in the bucket, kept in step with each snapshot: what to
upload and delete (`plan_tree`), doing it (`sync_tree`), the snapshot's `tree.json` that
vouches for every object (`write_tree_index`), and what a listing tells against it
(`tree_drift`)."""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repovault_pipeline.core.vault import lfs
from repovault_pipeline.core.vault.layout import TREE_INDEX
from repovault_pipeline.core.vault.lease import Lease
from repovault_pipeline.core.vault.lfs import LfsObjects
from repovault_pipeline.core.vault.localrepo import LocalRepo, TreeEntry
from repovault_pipeline.core.vault.records import TreeFile, TreeIndex
from repovault_pipeline.core.vault.store import ObjectInfo, ObjectStore
from repovault_pipeline.core.vault.treekeys import TREE, path_bytes, tree_key
from repovault_pipeline.core.vault.upload import ParallelUploader

IN_MEMORY_BLOB = 1024 * 1024
MAX_PATH_METADATA = 1024  # base64 of an encoded path kept in object metadata (S3: 2 KB in all)


@dataclass
class TreeSync:
    """What a run does to `tree/`: objects to delete, those left in place (key -> etag), HEAD's
    LFS files stored with their content (entry, oid), and blobs to upload."""

    stale: list[str]
    lfs_content: dict[str, tuple[str, int]]  # path -> oid, size
    etags: dict[str, str] = field(default_factory=dict)
    # key -> the etag listed before this run writes it (None: no object): its writes are
    # conditional on it, so an object another writer changed meanwhile is never overwritten.
    expected: dict[str, str | None] = field(default_factory=dict)
    lfs_files: list[tuple[TreeEntry, str]] = field(default_factory=list)
    blobs: list[TreeEntry] = field(default_factory=list)

    @property
    def uploaded(self) -> int:
        return len(self.lfs_files) + len(self.blobs)

    @property
    def upload_bytes(self) -> int:
        return sum(self.stored_size(e) for e, _ in self.lfs_files) + sum(e.size for e in self.blobs)

    def stored_size(self, entry: TreeEntry) -> int:
        """The size of the entry's `tree/` object: its LFS content's, else its blob's."""
        return self.lfs_content[entry.path][1] if entry.path in self.lfs_content else entry.size

    def condition(self, key: str) -> dict[str, Any]:
        """The write's condition: the object is still what this run listed."""
        etag = self.expected.get(key)
        return {"if_match": etag} if etag else {"if_none_match": True}


def stored_tree(
    store: ObjectStore, bucket: str, previous: TreeIndex, quiet: bool
) -> dict[str, ObjectInfo]:
    """What `tree/` holds, key -> object. When the bucket is `quiet` (its lease says nothing
    but finished runs wrote it since that `tree.json`), the previous snapshot's `tree.json`
    says so without a request: a run then pays for what changed, not for listing every file
    (10 requests and ~1 s of parsing per 10,000 files). Otherwise, and for a `tree.json`
    written before etags were recorded, one listing."""
    if quiet and previous.files and all(meta.etag for meta in previous.files.values()):
        return {
            key: ObjectInfo(key, meta.size, meta.etag or "", previous.written)
            for path, meta in previous.files.items()
            for key in [meta.key or TREE + path]
        }
    return {info.key: info for info in store.list(bucket, TREE)}


def plan_tree(
    existing: dict[str, ObjectInfo],
    entries: list[TreeEntry],
    previous: TreeIndex,
    kept_lfs: LfsObjects | None = None,
) -> TreeSync:
    """What makes `tree/` hold HEAD's files: delete what is gone, upload every file whose
    object is not vouched for by the previous snapshot's `tree.json`. The etags planned are
    those of the objects left in place; the uploader records those it writes. An LFS file
    whose object this run holds is stored with that content, where people browsing `tree/`
    expect the file; one whose object is missing keeps git's pointer text. Known before
    anything is written, so the upload's progress has its total."""
    content: dict[str, tuple[str, int]] = {}
    if kept_lfs is not None:
        content = {
            path: (oid, kept_lfs.objects[oid])
            for path, oid in kept_lfs.head.items()
            if oid in kept_lfs.objects
        }
    wanted = {tree_key(e.path) for e in entries}
    sync = TreeSync(stale=sorted(set(existing) - wanted), lfs_content=content)
    for entry in entries:
        key = tree_key(entry.path)
        stored = existing.get(key)
        before = previous.files.get(entry.path)
        lfs_oid = content[entry.path][0] if entry.path in content else None
        if (
            stored is not None
            and in_place(entry, before, stored, previous.written)
            and (before.lfs if before else None) == lfs_oid
        ):
            sync.etags[key] = stored.etag
            continue
        sync.expected[key] = stored.etag if stored is not None else None
        if lfs_oid is not None:
            sync.lfs_files.append((entry, lfs_oid))
        else:
            sync.blobs.append(entry)
    return sync


def sync_tree(
    store: ObjectStore,
    repo: LocalRepo,
    sync: TreeSync,
    uploader: ParallelUploader,
    work_dir: Path | None,
    lease: Lease,
) -> None:
    """Carry out `plan_tree`'s plan."""
    if sync.stale:
        # Deleted first: MinIO refuses `a/b` while an object `a` exists (a file that
        # became a folder).
        lease.check()
        store.delete(uploader.bucket, sync.stale)
    for entry, lfs_oid in sync.lfs_files:
        lease.check()
        key = tree_key(entry.path)
        metadata = {**_object_metadata(entry, key), "repovault-lfs-oid": lfs_oid}
        uploader.put_file(
            key,
            lfs.local_path(repo.path, lfs_oid),
            metadata=metadata,
            content_type=_content_type(entry),
            **sync.condition(key),
        )
    for entry, blob in zip(sync.blobs, repo.blobs([e.sha for e in sync.blobs]), strict=True):
        lease.check()  # stop writing tree/ at once if another run took the bucket
        key = tree_key(entry.path)
        kwargs: dict[str, Any] = {
            "metadata": _object_metadata(entry, key),
            "content_type": _content_type(entry),
            **sync.condition(key),
        }
        if entry.size <= IN_MEMORY_BLOB:
            uploader.put_bytes(key, blob.read(), **kwargs)
        else:
            fd, name = tempfile.mkstemp(dir=work_dir, prefix="blob-")
            with os.fdopen(fd, "wb") as out:
                blob.copy_to(out)
            uploader.put_file(key, Path(name), remove_after=True, **kwargs)


def write_tree_index(
    path: Path,
    head_commit: str,
    entries: list[TreeEntry],
    etags: dict[str, str],
    lfs_content: dict[str, tuple[str, int]] | None = None,
) -> None:
    """`tree.json` written entry by entry, so a tree of a million files is never held in
    memory as one JSON document: `{"files": {path: {mode, sha, size, etag}}, "head_commit"}`.
    An entry stored under an encoded key also has `key` and `path_b64` (the path's exact bytes;
    the JSON name of a path that is not UTF-8 holds its bytes as lone surrogates). An LFS file
    stored with its content (`lfs_content`: path -> oid, size) has `lfs` (the oid) and the
    content's size; `sha` stays the pointer blob's."""
    lfs_content = lfs_content or {}
    with path.open("w", encoding="ascii") as out:
        out.write('{\n "files": {')
        for n, entry in enumerate(entries):
            key = tree_key(entry.path)
            meta = TreeFile(mode=entry.mode, sha=entry.sha, size=entry.size, etag=etags[key])
            if entry.path in lfs_content:
                meta.lfs, meta.size = lfs_content[entry.path]
            if key != TREE + entry.path:
                meta.key = key
                meta.path_b64 = base64.b64encode(path_bytes(entry.path)).decode()
            doc = json.dumps(meta.model_dump(exclude_none=True))
            out.write(f"{',' if n else ''}\n  {json.dumps(entry.path)}: {doc}")
        out.write(f'\n }},\n "head_commit": {json.dumps(head_commit)}\n}}\n')


def in_place(
    entry: TreeEntry, before: TreeFile | None, stored: ObjectInfo | None, index_written: float
) -> bool:
    """The object at the entry's key holds its blob: the previous snapshot's `tree.json`
    recorded this blob and mode with the etag the store lists now, and the object was not
    written after that `tree.json` (a run that died since may have rewritten it; an etag
    covers the content, this covers the metadata, e.g. a mode-only change)."""
    return (
        before is not None
        and stored is not None
        and before.sha == entry.sha
        and before.mode == entry.mode
        and bool(before.etag)
        and before.etag == stored.etag
        and int(stored.modified) <= int(index_written)
    )


def tree_drift(store: ObjectStore, bucket: str, snapshot_id: str, index: TreeIndex) -> str | None:
    """What one listing of `tree/` (one request per 1,000 objects, no download) tells
    against the snapshot's `tree.json` (`index`): objects missing, extra, or changed (another
    etag, or written after that `tree.json`: a writer that lost its lease, a run that died, a
    hand edit). None: `tree/` is that snapshot's HEAD."""
    if not index.files:
        return None  # a snapshot written before tree.json recorded etags: nothing to match
    wanted = {meta.key or TREE + path: meta for path, meta in index.files.items()}
    changed, extra = [], []
    for info in store.list(bucket, TREE):
        meta = wanted.pop(info.key, None)
        if meta is None:
            extra.append(info.key)
        elif meta.etag != info.etag or int(info.modified) > int(index.written):
            changed.append(info.key)
    missing = sorted(wanted)
    if not (changed or extra or missing):
        return None
    first = (changed + extra + missing)[:3]
    return (
        f"tree/ differs from snapshot {snapshot_id}'s {TREE_INDEX}: "
        f"{len(changed)} changed, {len(extra)} extra, {len(missing)} missing "
        f"(e.g. {', '.join(first)})"
    )


def _object_metadata(entry: TreeEntry, key: str) -> dict[str, str]:
    """A `tree/` object's metadata: git mode and blob, the exact path when the key encodes it,
    and whether it is a symlink."""
    metadata = {"git-mode": entry.mode, "git-blob": entry.sha}
    if key != TREE + entry.path:
        encoded = base64.b64encode(path_bytes(entry.path)).decode()
        if len(encoded) <= MAX_PATH_METADATA:
            metadata["repovault-path-b64"] = encoded
    if entry.is_symlink:
        metadata["repovault-type"] = "symlink"
    return metadata


def _content_type(entry: TreeEntry) -> str:
    if entry.is_symlink:
        return "inode/symlink"
    return mimetypes.guess_type(entry.path)[0] or "application/octet-stream"
