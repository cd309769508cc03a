"""Where forge metadata lives in a repository's bucket, and the index every snapshot carries.

Shared by archiving and restoring (and read by the vault's catalog and the stats), so the names
are defined once: the snapshots follow the vault's `Layout` under `metadata/`, records are one
`<kind>.jsonl` per kind, release assets are content-addressed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.layout import METADATA
from repovault_pipeline.core.vault.store import ObjectStore

PREFIX = METADATA.prefix  # latest.json and snapshots/<id>/manifest.json under it
RECORD_KINDS = (
    "issues",
    "pull_requests",
    "comments",
    "reviews",
    "review_comments",
    "labels",
    "milestones",
    "releases",
)
ASSETS = "assets"  # index entry: release asset id@updated -> sha256:size, so none is fetched twice
INDEX = "index.json"
MANIFEST = "manifest.json"

Index = dict[str, dict[str, str]]  # kind (or ASSETS) -> record id -> digest


def asset_key(sha256: str, sealing: crypt.Sealing | None = None) -> str:
    """Content-addressed; encrypted copies per set of recipients (`crypt.Sealing.seal`)."""
    if sealing is None:
        return f"{PREFIX}assets/{sha256}"
    return f"{PREFIX}assets/{sha256}.{sealing.seal}{crypt.AGE_SUFFIX}"


def records_key(snapshot_id: str, kind: str, sealing: crypt.Sealing | None) -> str:
    """`<kind>.jsonl` of a snapshot; `.jsonl.age` when its manifest says it is encrypted."""
    name = f"{kind}.jsonl" + (crypt.AGE_SUFFIX if sealing else "")
    return METADATA.snapshot_key(snapshot_id, name)


def digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def read_index(store: ObjectStore, bucket: str, snapshot_id: str | None) -> Index:
    """Every record known at `snapshot_id` (kind -> id -> digest) and the known release assets."""
    raw = (
        store.get_bytes(bucket, METADATA.snapshot_key(snapshot_id, INDEX)) if snapshot_id else None
    )
    known = json.loads(raw) if raw else {}
    return {key: dict(known.get(key, {})) for key in (*RECORD_KINDS, ASSETS)}
