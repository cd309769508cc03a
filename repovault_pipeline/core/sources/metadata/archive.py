"""Archiving forge metadata: one run reads what changed (`fetch`) and commits a metadata snapshot
by the vault's protocol, the same as a code snapshot's: under the repository's lease, records
and index first, the manifest as the commit marker, then `latest.json` (`move_latest`).

Every `full_every_d` days a full pass reads everything again, which also finds deleted records
and changes the forge did not date. A run that found nothing new writes no snapshot; it moves
only the time of the last read in `latest.json`. Release assets are stored once each,
content-addressed, as they are met.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from repovault_pipeline.core.common.identity import RepoRef, bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.forge import Forge
from repovault_pipeline.core.sources.metadata.fetch import (
    OVERLAP,
    Changes,
    MetadataClient,
    Record,
    read_changes,
)
from repovault_pipeline.core.sources.metadata.layout import (
    ASSETS,
    INDEX,
    MANIFEST,
    RECORD_KINDS,
    Index,
    asset_key,
    read_index,
    records_key,
)
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.latest import move_latest
from repovault_pipeline.core.vault.layout import METADATA, new_snapshot_id
from repovault_pipeline.core.vault.lease import Lease
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Latest
from repovault_pipeline.core.vault.store import ObjectStore

log = logging.getLogger(__name__)

# Kinds a full read lists whole: what it no longer holds was deleted upstream.
LISTED_WHOLE = ("issues", "pull_requests", "labels", "milestones", "releases")


@dataclass
class MetadataResult:
    """What one metadata run did; `changed` counts records written per kind."""

    repo_id: str
    bucket: str
    snapshot_id: str | None = None
    full: bool = False
    changed: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    records: int = 0
    assets_uploaded: int = 0
    requests: int = 0
    absent: list[str] = field(default_factory=list)  # e.g. "no issue tracker": nothing to keep

    @property
    def outcome(self) -> str:
        return "completed" if self.snapshot_id else "unchanged"


@dataclass(frozen=True)
class _Run:
    """One run's fixed facts: where it writes, what it continues from, when it read."""

    bucket: str
    previous: dict[str, Any] | None
    started: datetime
    full: bool


class MetadataArchiver:
    """Reads a repository's forge metadata and commits a metadata snapshot of what changed."""

    def __init__(
        self, settings: Settings, store: ObjectStore, logger: logging.Logger | None = None
    ):
        self.settings = settings
        self.store = store
        self.log = logger or log
        self.sealing = crypt.sealing(settings.encrypt_recipients)

    def latest(self, bucket: str) -> dict[str, Any] | None:
        """The newest manifest, with the time of the last read from `latest.json` (a read that
        found nothing new moves only that). A `latest.json` naming a missing or incomplete
        snapshot is damage: the newest complete snapshot is used, and this run's pointer write
        repairs it."""
        pointer = SnapshotReader(self.store, bucket, METADATA).pointer()
        if pointer.manifest is None:
            return None
        if pointer.damage:
            self.log.warning("%s: %s; this run repairs it", bucket, pointer.damage)
            return pointer.manifest.model_dump(exclude_unset=True)
        latest = pointer.latest.model_dump(exclude_unset=True) if pointer.latest else {}
        return {**pointer.manifest.model_dump(exclude_unset=True), **latest}

    def index(self, bucket: str, manifest: dict[str, Any] | None) -> Index:
        return read_index(self.store, bucket, manifest["snapshot_id"] if manifest else None)

    def archive(self, ref: RepoRef, forge: Forge) -> MetadataResult:
        bucket = bucket_name(ref.repo_id, self.settings.bucket_prefix)
        self.store.ensure_bucket(bucket)
        result = MetadataResult(ref.repo_id, bucket)
        previous = self.latest(bucket)
        index = self.index(bucket, previous)
        started = datetime.now(UTC)
        since: datetime | None = None
        full = previous is None or started - datetime.fromisoformat(
            previous["last_full_at"]
        ) >= timedelta(days=self.settings.metadata_full_every_d)
        if previous is not None and not full:
            since = datetime.fromisoformat(previous["fetched_at"]) - OVERLAP
        run = _Run(bucket, previous, started, full)
        reader = MetadataClient(forge, self.settings)
        with tempfile.TemporaryDirectory(prefix="repovault-metadata-") as tmp:

            def with_assets(release: Record) -> Record:
                return self._with_assets(reader, release, index[ASSETS], Path(tmp), result)

            changes = read_changes(reader, forge.project(ref), index, since, with_assets)
            result.requests = reader.requests
            result.absent = changes.absent
            if full:  # what the whole listing no longer holds was deleted upstream
                for kind in LISTED_WHOLE:
                    gone = set(index[kind]) - changes.seen.get(kind, set())
                    result.deleted += len(gone)
                    for key in gone:
                        del index[kind][key]
            result.full = full
            result.changed = {kind: len(rs) for kind, rs in changes.changed.items() if rs}
            result.records = sum(len(index[kind]) for kind in RECORD_KINDS)
            if not result.changed and not result.deleted and previous is not None:
                self._touch(run, previous)
                return result
            self._commit(run, index, changes, result)
        return result

    def _with_assets(
        self,
        reader: MetadataClient,
        release: Record,
        known: dict[str, str],
        tmp: Path,
        result: MetadataResult,
    ) -> Record:
        """The release with `repovault_assets`: each file downloaded and stored once, under its
        sha256; an asset already in the index (same id, same update time) is not fetched."""
        stored = []
        for asset in reader.forge.release_assets(release):
            seen_as = f"{asset.id}@{asset.updated}"
            sha = known[seen_as].split(":")[0] if seen_as in known else None
            # Known, but not stored as this run stores it (recipients changed): fetched again.
            if sha is not None and self._holds(result.bucket, asset_key(sha, self.sealing)):
                size = int(known[seen_as].split(":")[1])
            else:
                sha, size = self._store_asset(reader, asset.url, tmp / "asset", result)
                known[seen_as] = f"{sha}:{size}"
            stored.append(
                {
                    "id": asset.id,
                    "name": asset.name,
                    "size": size,
                    "sha256": sha,
                    "key": asset_key(sha, self.sealing),
                }
            )
        return {**release, "repovault_assets": stored}

    def _store_asset(
        self, reader: MetadataClient, url: str, path: Path, result: MetadataResult
    ) -> tuple[str, int]:
        """Download one asset to `path` and upload it (sealed, when the vault encrypts) unless
        the bucket holds it already; its sha256 and size."""
        sha, size = reader.download(url, path)
        key = asset_key(sha, self.sealing)
        if not self._holds(result.bucket, key):
            upload = path
            if self.sealing is not None:
                upload = path.with_name("asset.age")
                crypt.encrypt_file(self.sealing, path, upload)
            self.store.put_file(result.bucket, key, upload)
            upload.unlink()
            result.assets_uploaded += 1
        path.unlink(missing_ok=True)
        return sha, size

    def _holds(self, bucket: str, key: str) -> bool:
        return any(o.key == key for o in self.store.list(bucket, key))

    def _commit(self, run: _Run, index: Index, changes: Changes, result: MetadataResult) -> None:
        """A new snapshot under the lease: records, index, then the manifest (the commit
        marker), then `latest.json`."""
        index_bytes = json.dumps(index, sort_keys=True).encode()
        previous_id = run.previous["snapshot_id"] if run.previous else None
        snapshot_id = new_snapshot_id(hashlib.sha256(index_bytes).hexdigest(), previous_id)
        with self._lease(run.bucket, snapshot_id) as lease:
            files = self._write_records(run.bucket, snapshot_id, changes.changed)
            self.store.put_bytes(
                run.bucket,
                METADATA.snapshot_key(snapshot_id, INDEX),
                index_bytes,
                content_type="application/json",
            )
            manifest = self._manifest(run, snapshot_id, files, result)
            lease.confirm()  # the manifest is the commit marker
            self.store.put_bytes(
                run.bucket,
                METADATA.snapshot_key(snapshot_id, MANIFEST),
                json.dumps(manifest, indent=1).encode(),
                content_type="application/json",
            )
            lease.confirm()
            move_latest(self.store, run.bucket, METADATA, Latest(snapshot_id=snapshot_id), self.log)
        result.snapshot_id = snapshot_id

    def _write_records(
        self, bucket: str, snapshot_id: str, changed: dict[str, list[Record]]
    ) -> dict[str, dict[str, int]]:
        """One `<kind>.jsonl` per kind with changes (sealed when the vault encrypts); what the
        manifest's `files` says of each."""
        files = {}
        for kind, records in changed.items():
            if records:
                body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
                self.store.put_bytes(
                    bucket,
                    records_key(snapshot_id, kind, self.sealing),
                    crypt.encrypt_bytes(self.sealing, body) if self.sealing else body,
                    content_type="application/x-ndjson",
                )
                files[kind] = {"records": len(records), "bytes": len(body)}
        return files

    def _manifest(
        self,
        run: _Run,
        snapshot_id: str,
        files: dict[str, dict[str, int]],
        result: MetadataResult,
    ) -> dict[str, Any]:
        previous, started = run.previous, run.started.isoformat()
        return {
            "repo_id": result.repo_id,
            "snapshot_id": snapshot_id,
            "previous": previous["snapshot_id"] if previous else None,
            "fetched_at": started,
            "full": run.full,
            "last_full_at": started if run.full or previous is None else previous["last_full_at"],
            "files": files,
            "records": result.records,
            "deleted": result.deleted,
            **({"absent": result.absent} if result.absent else {}),
            # The records and release assets are encrypted to these age recipients; the
            # index (record ids and digests) stays readable: the next run reads it.
            **({"encryption": self.sealing.record().model_dump()} if self.sealing else {}),
        }

    def _touch(self, run: _Run, previous: dict[str, Any]) -> None:
        """Nothing changed: no snapshot, but the next incremental read starts from now. Under
        the lease, by the code snapshot's rules (`move_latest`): never onto a snapshot older
        than a complete one named already, a pointer to a missing one repaired."""
        # The manifest is immutable; the time of the last read lives in latest.json instead.
        doc = {"snapshot_id": previous["snapshot_id"], "fetched_at": run.started.isoformat()}
        if run.full:
            doc["last_full_at"] = run.started.isoformat()
        with self._lease(run.bucket, previous["snapshot_id"]) as lease:
            lease.confirm()
            move_latest(self.store, run.bucket, METADATA, Latest.model_validate(doc), self.log)

    def _lease(self, bucket: str, snapshot_id: str) -> Lease:
        return Lease.acquire(
            self.store,
            bucket,
            snapshot_id,
            self.settings.lease_ttl_s,
            self.settings.lease_wait_s,
            self.log,
        )


def wanted(settings: Settings, forge: Forge | None, requested: bool | None = None) -> str | None:
    """Why this run keeps no metadata, or None when it does. `requested` is the request's own
    choice; else REPOVAULT_KEEP_METADATA: `on`, `off`, or `auto` (on when the forge's token is
    set: without one, a large repository exhausts the anonymous rate limit at once)."""
    if forge is None:
        return (
            "no forge API is known for this host (REPOVAULT_GITHUB_API, REPOVAULT_GITLAB_API, "
            "REPOVAULT_GITEA_API, REPOVAULT_BITBUCKET_API)"
        )
    if requested is False:
        return "the request asked for no metadata"
    if requested is None and settings.keep_metadata == "off":
        return "REPOVAULT_KEEP_METADATA=off"
    if requested is None and settings.keep_metadata == "auto" and not forge.token:
        return (
            f"no {forge.token_env} (REPOVAULT_KEEP_METADATA=auto); "
            "set it, or REPOVAULT_KEEP_METADATA=on"
        )
    return None
