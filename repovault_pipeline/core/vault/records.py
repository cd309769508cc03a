"""The JSON documents the vault writes into a bucket, as pydantic models (docs/contract.md,
"Object layout"): a snapshot's `manifest.json`, `tree.json` and `lfs.json`, the bucket's
`latest.json` and `lease.json`.

Stored data outlives the code that wrote it, so every model reads what older and newer
writers wrote: fields added later are optional with the default an older document implies,
and fields this version does not know are kept (`extra="allow"`), read back and written
again unchanged, never dropped. Writers dump with `exclude_unset` or `exclude_none` as the
document always had it: the bytes keep their field names and shapes.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """A stored JSON document, or a part of one: unknown fields tolerated and kept."""

    model_config = ConfigDict(extra="allow")


class Encryption(Record):
    """`encryption` of a manifest or `lfs.json`: the age recipients its objects are sealed to."""

    scheme: str = "age"
    recipients: list[str] = Field(default_factory=list)
    seal: str | None = None


class SnapshotRecord(Record):
    """What every snapshot's manifest has, whatever layout wrote it (code, wiki, forge
    metadata): its id, and `encryption` when its objects are encrypted."""

    snapshot_id: str
    encryption: Encryption | None = None  # absent: plaintext


class BundleRecord(Record):
    """A manifest's `bundle`: the object as stored (the ciphertext when encrypted). `etag` is
    the store's answer to the upload (absent in manifests written before it was recorded): a
    listing showing it again proves the object unchanged without downloading it."""

    key: str
    size: int
    sha256: str
    etag: str | None = None


class TreeSummary(Record):
    """A code manifest's `tree`: what `tree/` holds of HEAD (`index`: its `tree.json`, None
    when encrypted: no `tree/`)."""

    files: int
    bytes: int
    index: str | None = None
    lfs_files: int = 0  # HEAD's LFS files (stored with their content, or as pointers)
    lfs_pointers: list[str] = Field(default_factory=list)  # kept as pointers: object missing


class LfsSummary(Record):
    """A code manifest's `lfs`: the LFS objects the snapshot's history points to."""

    objects: int = 0
    bytes: int = 0
    missing: int = 0
    missing_paths: list[str] = Field(default_factory=list)
    index: str | None = None  # its `lfs.json`


class Manifest(SnapshotRecord):
    """`snapshots/<id>/manifest.json` of a code or wiki snapshot: written last, the commit
    marker. A wiki's has no `tree`, `submodules`, `lfs` nor `keep`; a code snapshot's `lfs`
    is null when LFS objects were not kept."""

    repo_id: str
    repo_url: str
    head_commit: str
    head_ref: str | None = None
    default_branch: str | None = None
    refs: dict[str, str]
    bundle: BundleRecord
    # The snapshot whose refs this bundle builds on: it holds only the objects new since then
    # (git bundle prerequisites), restored by fetching its chain from the full bundle on
    # (chain.py). Absent: a full bundle.
    base: str | None = None
    tree: TreeSummary | None = None
    submodules: dict[str, str] | None = None  # path -> commit
    lfs: LfsSummary | None = None
    keep: dict[str, bool] | None = None  # the request's choice of extras
    created_at: str
    duration_s: float | None = None
    repovault_version: str | None = None
    request_id: str | None = None  # reconcile recognises the request's snapshot by it
    run_id: str | None = None


class Latest(Record):
    """`latest.json`: the snapshot readers use. A code or wiki pointer also names its
    repository, manifest key, HEAD and date; a metadata pointer carries the time of the last
    read (extra fields, the metadata archiver's)."""

    snapshot_id: str
    repo_id: str | None = None
    manifest: str | None = None
    head_commit: str | None = None
    created_at: str | None = None


class TreeFile(Record):
    """One file of `tree.json`: its git mode, blob and size, and the etag of its `tree/`
    object. `key` and `path_b64` when its key encodes the path (not UTF-8, too long...);
    `lfs` (the oid) when stored with its LFS content, `size` then being the content's."""

    mode: str
    sha: str
    size: int = 0
    etag: str | None = None  # absent in tree.json written before etags were recorded
    lfs: str | None = None
    key: str | None = None
    path_b64: str | None = None


class TreeIndex(Record):
    """A snapshot's `tree.json`: path -> file, and HEAD. `written` is when the store wrote it
    (its clock, not in the document): it bounds when every object it vouches for was written."""

    files: dict[str, TreeFile] = Field(default_factory=dict)
    head_commit: str | None = None
    written: float = Field(default=0.0, exclude=True)


class LfsIndex(Record):
    """A snapshot's `lfs.json`: the LFS objects stored and those missing (oid -> size), the
    paths naming the missing ones, and `encryption` when the objects are stored encrypted."""

    objects: dict[str, int] = Field(default_factory=dict)
    missing: dict[str, int] = Field(default_factory=dict)
    missing_paths: dict[str, list[str]] = Field(default_factory=dict)
    encryption: Encryption | None = None


class LeaseHolder(Record):
    """`previous` of `lease.json`: the holder before, when it did not release the lease."""

    state: str
    owner: str | None = None
    run_id: str | None = None
    snapshot_id: str | None = None
    renewed_at: str | None = None
    taken_over: bool = False  # it stopped renewing unreleased: its uploads may still land


class LeaseRecord(Record):
    """`lease.json`: who holds the bucket, for which snapshot, for how long (`ttl_s`)."""

    state: str = "held"
    owner: str | None = None
    run_id: str | None = None  # the Dagster run holding it
    snapshot_id: str | None = None
    ttl_s: int | float = 0  # absent or unreadable: expired at once (written as configured)
    renewals: int | None = None
    host: str | None = None
    pid: int | None = None
    written_at: str | None = None
    previous: LeaseHolder | None = None
    interrupted: str | None = None  # why a holder that was gone was marked interrupted


def json_bytes(
    record: BaseModel, *, exclude_unset: bool = False, exclude_none: bool = False
) -> bytes:
    """A document as the vault stores it: indented by one, keys sorted."""
    doc = record.model_dump(mode="json", exclude_unset=exclude_unset, exclude_none=exclude_none)
    return json.dumps(doc, indent=1, sort_keys=True).encode()
