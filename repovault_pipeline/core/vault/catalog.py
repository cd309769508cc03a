"""What one repository's bucket holds, snapshot by snapshot: its code, its wiki and its forge
metadata, each with the ids `restore --snapshot` takes (with `--wiki` or `--metadata` for the
latter two). `repovault snapshots` and `GET /api/repositories/{repo_id}/snapshots` both read it
here. Only complete snapshots (manifest written) are listed, newest first; given the retention
policy, code and wiki snapshots say why the policy keeps them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from repovault_pipeline.core.common.identity import bucket_name
from repovault_pipeline.core.vault.layout import CODE, METADATA, WIKI, M
from repovault_pipeline.core.vault.policy import Policy
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest, SnapshotRecord
from repovault_pipeline.core.vault.store import ObjectStore


@dataclass(frozen=True)
class SnapshotInfo:
    """One complete snapshot. Code and wiki snapshots are git bundles at a HEAD; a metadata
    snapshot holds the forge records changed since the one before it (`full`: read whole)."""

    snapshot_id: str
    created_at: str
    head_commit: str | None = None
    refs: int | None = None
    bundle_bytes: int | None = None
    tree_files: int | None = None
    # Code and wiki: the snapshot an incremental bundle builds on ("" for a full bundle).
    base: str | None = None
    records: dict[str, int] | None = None  # metadata: records written, by kind
    bytes: int | None = None  # metadata: the size of those records
    full: bool | None = None
    # Code and wiki, with a policy: why it keeps this snapshot (`last`, `daily 2026-12-05`);
    # empty: retention keeps it as a pin, or the next run deletes it (the policy changed).
    kept: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        """The fields this kind of snapshot has."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def size(self) -> int:
        return self.bundle_bytes if self.bundle_bytes is not None else self.bytes or 0


@dataclass(frozen=True)
class Series:
    """The snapshots of one kind, newest first, and the one `latest.json` points at (when
    that pointer is damaged: the newest complete one, and `warning` says why)."""

    latest: str | None
    snapshots: tuple[SnapshotInfo, ...]
    warning: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "latest": self.latest,
            "snapshots": [s.to_dict() for s in self.snapshots],
            "warning": self.warning,
        }


@dataclass(frozen=True)
class RepoSnapshots:
    repo_id: str
    bucket: str
    code: Series
    wiki: Series
    metadata: Series

    @property
    def empty(self) -> bool:
        return not (self.code.snapshots or self.wiki.snapshots or self.metadata.snapshots)

    def series(self) -> dict[str, Series]:
        return {"code": self.code, "wiki": self.wiki, "metadata": self.metadata}


def repo_snapshots(
    store: ObjectStore, repo_id: str, bucket_prefix: str, policy: Policy | None = None
) -> RepoSnapshots:
    """Every complete code, wiki and metadata snapshot of `repo_id` (one manifest read each);
    with `policy`, each code and wiki snapshot's reasons to be kept (metadata snapshots, each
    holding the changes since the one before, are never deleted)."""
    bucket = bucket_name(repo_id, bucket_prefix)
    return RepoSnapshots(
        repo_id,
        bucket,
        _series(SnapshotReader(store, bucket, CODE), _git, policy),
        _series(SnapshotReader(store, bucket, WIKI), _git, policy),
        _series(SnapshotReader(store, bucket, METADATA), _metadata),
    )


def _series(
    reader: SnapshotReader[M],
    describe: Callable[[str, M], SnapshotInfo],
    policy: Policy | None = None,
) -> Series:
    complete, _ = reader.snapshot_ids()
    reasons = policy.reasons(complete) if policy else {}
    found = []
    for snapshot_id in complete:
        manifest = reader.manifest(snapshot_id)
        if manifest is not None:  # None: deleted by retention meanwhile
            info = describe(snapshot_id, manifest)
            if policy:
                info = replace(info, kept=tuple(reasons.get(snapshot_id, ())))
            found.append(info)
    if not found:
        return Series(None, ())
    pointer = reader.pointer()
    latest = pointer.manifest.snapshot_id if pointer.manifest else None
    return Series(latest, tuple(found), pointer.damage)


def _git(snapshot_id: str, manifest: Manifest) -> SnapshotInfo:
    tree = manifest.tree  # a wiki has no tree/
    return SnapshotInfo(
        snapshot_id,
        manifest.created_at,
        head_commit=manifest.head_commit,
        refs=len(manifest.refs),
        bundle_bytes=manifest.bundle.size,
        tree_files=tree.files if tree else None,
        base=manifest.base or "",
    )


def _metadata(snapshot_id: str, manifest: SnapshotRecord) -> SnapshotInfo:
    """A metadata snapshot's manifest, read by the fields the metadata archiver writes."""
    doc = manifest.model_dump(exclude_unset=True)
    files = doc.get("files", {})
    return SnapshotInfo(
        snapshot_id,
        doc["fetched_at"],
        records={kind: f["records"] for kind, f in files.items()},
        bytes=sum(f["bytes"] for f in files.values()),
        full=doc.get("full"),
    )
