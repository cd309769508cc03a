"""`latest.json`, the pointer readers follow to a bucket's latest snapshot (one per layout):
read and checked against the snapshots it may name (`Pointer`), and moved forward, never
backwards, by the lease holder (`move_latest`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic

from pydantic import ValidationError

from repovault_pipeline.core.common.errors import PreconditionFailed, TransientError
from repovault_pipeline.core.vault.layout import MANIFEST, Layout, M
from repovault_pipeline.core.vault.records import Latest, Manifest, json_bytes
from repovault_pipeline.core.vault.store import ObjectStore


@dataclass(frozen=True)
class Pointer(Generic[M]):
    """`latest.json` as readers use it. `manifest` is the snapshot it names when that one is
    complete; when it names a missing or incomplete snapshot, is unreadable, or is missing
    beside complete snapshots (a writer with a fast clock, an operator's mistake), `damage`
    says so in one line and `manifest` is the newest complete snapshot instead (None when
    there is none): a damaged pointer hides no snapshot, and the next run repairs it."""

    named: str | None  # the snapshot id latest.json names (None: no readable pointer)
    manifest: M | None
    damage: str | None = None
    latest: Latest | None = None  # what latest.json holds

    @property
    def repo_id(self) -> str | None:
        """As latest.json records it: names the repository of a bucket with no manifest."""
        return self.latest.repo_id if self.latest else None


def read_latest(raw: bytes | None) -> Latest | None:
    """A `latest.json` as stored; None when absent or unreadable (no snapshot id)."""
    if raw is None:
        return None
    try:
        return Latest.model_validate_json(raw)
    except ValidationError:
        return None


def latest_of(manifest: Manifest, layout: Layout[Manifest]) -> Latest:
    """The `latest.json` that names `manifest`'s snapshot."""
    return Latest(
        repo_id=manifest.repo_id,
        snapshot_id=manifest.snapshot_id,
        manifest=layout.snapshot_key(manifest.snapshot_id, MANIFEST),
        head_commit=manifest.head_commit,
        created_at=manifest.created_at,
    )


def move_latest(
    store: ObjectStore, bucket: str, layout: Layout[M], latest: Latest, logger: logging.Logger
) -> int:
    """Point the layout's `latest.json` at `latest`'s snapshot, whose manifest is written,
    unless it names a newer complete snapshot already: read it, then write conditionally on
    what was read, so it never moves backwards. A pointer to a newer snapshot that is missing
    or incomplete is damage (a writer with a fast clock): it is replaced, and the log says so.
    Called under the bucket's lease; returns the bytes written."""
    key = layout.latest_key
    data = json_bytes(latest, exclude_unset=True)
    for _ in range(10):
        current = store.read(bucket, key)
        if current is not None and current.data == data:
            return 0
        found = read_latest(current.data) if current else None
        named = found.snapshot_id if found else None
        if named and named > latest.snapshot_id:
            if store.read(bucket, layout.snapshot_key(named, MANIFEST)) is not None:
                logger.warning("%s of %s stays on the newer snapshot %s", key, bucket, named)
                return 0
            logger.warning(
                "%s of %s named snapshot %s, which is missing or incomplete; it names %s now",
                key,
                bucket,
                named,
                latest.snapshot_id,
            )
        try:
            store.put_bytes(
                bucket,
                key,
                data,
                content_type="application/json",
                if_match=current.etag if current else None,
                if_none_match=current is None,
            )
            return len(data)
        except PreconditionFailed:
            continue  # written meanwhile: read it again
    raise TransientError(f"{key} of {bucket} kept changing under this run; retry")
