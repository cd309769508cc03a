"""What readers see of a bucket: only snapshots whose manifest exists (`SnapshotReader`), and
the repositories the vault holds (`list_vault`, `archived_repositories`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, overload

from repovault_pipeline.core.vault import lfs
from repovault_pipeline.core.vault.latest import Pointer, read_latest
from repovault_pipeline.core.vault.layout import CODE, MANIFEST, TREE_INDEX, Layout, M, snapshot_key
from repovault_pipeline.core.vault.records import LfsIndex, Manifest, TreeIndex
from repovault_pipeline.core.vault.store import ObjectStore


class SnapshotReader(Generic[M]):
    """What readers see of one series of snapshots in a bucket (default: the code's): only
    snapshots whose manifest exists, each read as its layout's manifest model."""

    @overload
    def __init__(self: SnapshotReader[Manifest], store: ObjectStore, bucket: str) -> None: ...

    @overload
    def __init__(self, store: ObjectStore, bucket: str, layout: Layout[M]) -> None: ...

    def __init__(self, store: ObjectStore, bucket: str, layout: Layout[Any] = CODE) -> None:
        self.store = store
        self.bucket = bucket
        self.layout: Layout[M] = layout

    def latest_id(self) -> str | None:
        """The snapshot `latest.json` points at, or None for a repository never archived."""
        latest = read_latest(self.store.get_bytes(self.bucket, self.layout.latest_key))
        return latest.snapshot_id if latest else None

    def latest(self) -> M | None:
        """The latest complete manifest: the one `latest.json` points at, or the newest complete
        one when the pointer is damaged (`pointer` says why); None when none is stored."""
        return self.pointer().manifest

    def pointer(self) -> Pointer[M]:
        """`latest.json` checked against the snapshots it may name (see `Pointer`)."""
        key = self.layout.latest_key
        raw = self.store.get_bytes(self.bucket, key)
        latest = read_latest(raw)
        named = (latest.snapshot_id or None) if latest else None
        manifest = self.manifest(named) if named else None
        if manifest is not None:
            return Pointer(named, manifest, latest=latest)
        if named and self.store.get_bytes(self.bucket, key) != raw:
            return self.pointer()  # moved on meanwhile (retention may then delete `named`)
        complete, incomplete = self.snapshot_ids()
        if raw is None and not complete:
            return Pointer(None, None)  # never archived (or only a run that died half way)
        if raw is None:
            what = f"{key} is missing"
        elif not named:
            what = f"{key} is unreadable"
        elif named in incomplete:
            what = f"{key} names snapshot {named}, which is incomplete (no {MANIFEST})"
        else:
            what = f"{key} names snapshot {named}, which is not stored"
        newest = complete[0] if complete else None
        fallback = self.manifest(newest) if newest else None
        damage = (
            f"{what}; the newest complete snapshot is {newest}"
            if fallback
            else f"{what}; no complete snapshot is stored"
        )
        return Pointer(named, fallback, damage, latest)

    def manifest(self, snapshot_id: str) -> M | None:
        raw = self.store.get_bytes(self.bucket, self.layout.snapshot_key(snapshot_id, MANIFEST))
        return self.layout.manifest.model_validate_json(raw) if raw is not None else None

    def lfs_index(self, snapshot_id: str) -> LfsIndex:
        """A snapshot's `lfs.json`, empty when it kept none."""
        raw = self.store.get_bytes(self.bucket, snapshot_key(snapshot_id, lfs.LFS_INDEX))
        return LfsIndex.model_validate_json(raw) if raw is not None else LfsIndex()

    def tree_index(self, snapshot_id: str) -> TreeIndex:
        """A snapshot's `tree.json` with the time the store wrote it; empty when it has none."""
        found = self.store.read(self.bucket, snapshot_key(snapshot_id, TREE_INDEX))
        if found is None:
            return TreeIndex()
        index = TreeIndex.model_validate_json(found.data)
        index.written = found.modified
        return index

    def snapshot_ids(self) -> tuple[list[str], list[str]]:
        """(complete, incomplete) snapshot ids, newest first."""
        keys: dict[str, set[str]] = {}
        prefix = self.layout.snapshots
        for info in self.store.list(self.bucket, prefix):
            snap, _, name = info.key[len(prefix) :].partition("/")
            keys.setdefault(snap, set()).add(name)
        ordered = sorted(keys, reverse=True)
        return (
            [s for s in ordered if MANIFEST in keys[s]],
            [s for s in ordered if MANIFEST not in keys[s]],
        )


@dataclass(frozen=True)
class Listed:
    """One repository bucket as `repovault list` shows it: its latest complete manifest (None
    when a damaged pointer is all there is) and the pointer's damage, if any."""

    bucket: str
    repo_id: str | None
    manifest: Manifest | None
    damage: str | None


@dataclass(frozen=True)
class Archived:
    """One archived repository: its bucket and latest complete manifest (the newest complete
    one when `latest.json` is damaged, `warning` then saying so)."""

    bucket: str
    manifest: Manifest
    warning: str | None


def list_vault(store: ObjectStore, prefix: str) -> Iterator[Listed]:
    """Every repository bucket that holds a complete snapshot or a damaged `latest.json`;
    buckets with nothing committed (a first run that died) are skipped."""
    for bucket in store.list_buckets(prefix):
        pointer = SnapshotReader(store, bucket).pointer()
        manifest = pointer.manifest
        if manifest is not None or pointer.damage:
            repo_id = manifest.repo_id if manifest else pointer.repo_id
            yield Listed(bucket, repo_id, manifest, pointer.damage)


def archived_repositories(store: ObjectStore, prefix: str) -> Iterator[Archived]:
    """Every repository bucket's latest complete manifest; half-written ones are skipped."""
    for listed in list_vault(store, prefix):
        if listed.manifest is not None:
            yield Archived(listed.bucket, listed.manifest, listed.damage)
