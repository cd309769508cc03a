"""The snapshot writer (docs/contract.md, "Object layout"): bundle, incremental `tree/`,
manifest, `latest.json`.

Order of writes is the safety argument: the bundle and `tree/` first, `tree.json` and
`manifest.json` next (the manifest is the commit marker), `latest.json` only then, retention
last. A run that dies anywhere before the manifest leaves readers on the previous snapshot.
The clone it writes comes from `prepare.py`; `tree/` is kept by `tree_sync.py`, old snapshots
go by `retention.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from repovault_pipeline import __version__
from repovault_pipeline.core.common.errors import PreconditionFailed, TransientError
from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import crypt, lfs
from repovault_pipeline.core.vault.gitops import refs_digest
from repovault_pipeline.core.vault.latest import latest_of, move_latest
from repovault_pipeline.core.vault.layout import (
    BUNDLE,
    MANIFEST,
    TREE_INDEX,
    WIKI,
    Layout,
    snapshot_key,
)
from repovault_pipeline.core.vault.lease import Lease
from repovault_pipeline.core.vault.localrepo import LocalRepo, TreeEntry
from repovault_pipeline.core.vault.outcome import ArchiveResult
from repovault_pipeline.core.vault.policy import Policy
from repovault_pipeline.core.vault.prepare import Prepared, Preparer, already_held, discard
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import (
    BundleRecord,
    LfsSummary,
    Manifest,
    TreeIndex,
    TreeSummary,
    json_bytes,
)
from repovault_pipeline.core.vault.retention import apply_retention
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256
from repovault_pipeline.core.vault.tree_sync import (
    TreeSync,
    plan_tree,
    stored_tree,
    sync_tree,
    write_tree_index,
)
from repovault_pipeline.core.vault.upload import ParallelUploader, UploadProgress

log = logging.getLogger(__name__)


class SnapshotWriter(Preparer):
    """Archives one repository into its bucket: `prepare` (the clone), then `upload`."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        logger: logging.Logger | None = None,
        progress: Callable[[UploadProgress], None] | None = None,
    ) -> None:
        """`progress` hears how far an upload is, every REPOVAULT_PROGRESS_EVERY_S at most
        (default: its `line` in the log, which `repovault submit --wait` reads back)."""
        super().__init__(settings, store, logger or log)
        self.progress = progress or (lambda done: self.log.info(done.line()))

    def archive(self, ref: RepoRef) -> ArchiveResult:
        """prepare + upload + clean up: the whole archive of one repository."""
        prepared = self.prepare(ref)
        try:
            return self.upload(prepared)
        finally:
            discard(prepared)

    def upload(self, prepared: Prepared) -> ArchiveResult:
        """Under the bucket's lease: write the snapshot in commit order, move `latest.json`
        forward, apply retention. A run whose clone is older than the latest snapshot, or
        equal to it, writes nothing (`unchanged`)."""
        result = ArchiveResult.starting(prepared)
        wiki = prepared.wiki
        wiki_changed = wiki is not None and not wiki.unchanged
        damaged = [p for p in (prepared, wiki) if p is not None and p.pointer_damage]
        if prepared.unchanged and not wiki_changed:
            result.held_lfs(prepared.held_lfs)
            if not damaged:
                result.duration_s = round(time.time() - prepared.started_at, 3)
                return result
        upload_started = time.time()
        holder = wiki if prepared.unchanged and wiki_changed else prepared
        assert holder is not None and holder.snapshot_id is not None
        self.store.ensure_bucket(prepared.bucket)
        with Lease.acquire(
            self.store,
            prepared.bucket,
            holder.snapshot_id,
            self.settings.lease_ttl_s,
            self.settings.lease_wait_s,
            self.log,
            run_id=prepared.run_id,
        ) as lease:
            self._under_lease(prepared, result, lease)
            for layout in {p.layout for p in damaged}:
                result.bytes_uploaded += self._repair_latest(prepared.bucket, layout, lease)
        result.upload_s = round(time.time() - upload_started, 3)
        result.duration_s = round(time.time() - prepared.started_at, 3)
        self.log.info(
            "snapshot %s of %s (%s): %d files uploaded, %d deleted, %.1f MB; wiki %s",
            result.snapshot_id,
            prepared.repo_id,
            result.status,
            result.files_uploaded,
            result.files_deleted,
            result.bytes_uploaded / 1e6,
            result.wiki_outcome or "not kept",
        )
        return result

    def _under_lease(self, prepared: Prepared, result: ArchiveResult, lease: Lease) -> None:
        """The code's snapshot (unless one taken meanwhile holds it), then the wiki's."""
        if not prepared.unchanged:
            reader = SnapshotReader(self.store, prepared.bucket)
            latest = reader.latest()
            rewrite = lease.repair or prepared.fresh is not None
            if latest is not None and already_held(latest, prepared, rewrite):
                self._covered_by(result, latest, prepared)
                result.held_lfs(latest.lfs if prepared.keep.lfs else None)
            else:
                self._write_snapshot(prepared, result, reader, latest, lease)
                result.fresh = prepared.fresh
                lease.repair = False  # tree/ is this snapshot's HEAD now
        else:
            result.held_lfs(prepared.held_lfs)
        wiki = prepared.wiki
        if wiki is not None and not wiki.unchanged:
            self._write_wiki(wiki, result, lease)

    def _repair_latest(self, bucket: str, layout: Layout[Manifest], lease: Lease) -> int:
        """Under the lease: point a `latest.json` that names a missing or incomplete snapshot
        at the newest complete one (a snapshot this run wrote has moved it already)."""
        pointer = SnapshotReader(self.store, bucket, layout).pointer()
        if not pointer.damage or pointer.manifest is None:
            return 0
        manifest = pointer.manifest
        lease.confirm()
        written = move_latest(self.store, bucket, layout, latest_of(manifest, layout), self.log)
        self.log.warning(
            "%s: %s; repaired: it names %s now", bucket, pointer.damage, manifest.snapshot_id
        )
        return written

    def _write_wiki(self, wiki: Prepared, result: ArchiveResult, lease: Lease) -> None:
        """The wiki's snapshot under `wiki/`: bundle, manifest (last), `wiki/latest.json`,
        retention; skipped when a snapshot taken meanwhile holds it already."""
        reader = SnapshotReader(self.store, wiki.bucket, WIKI)
        latest = reader.latest()
        if latest is not None and already_held(latest, wiki, repair=wiki.fresh is not None):
            result.wiki_snapshot_id = latest.snapshot_id
            return
        snapshot_id = wiki.snapshot_id
        assert snapshot_id is not None
        written = ArchiveResult(
            repo_id=wiki.repo_id,
            repo_url=wiki.repo_url,
            bucket=wiki.bucket,
            outcome="completed",
            snapshot_id=snapshot_id,
            head_commit=wiki.head_commit,
            default_branch=wiki.default_branch,
        )
        bundle, key = self._stored_bundle(wiki)
        lease.check()
        written.bundle_size = bundle.stat().st_size
        etag = self.store.put_file(wiki.bucket, key, bundle)
        written.bytes_uploaded = written.bundle_size
        manifest = self._manifest(wiki, written, _bundle_record(bundle, key, etag))
        self._commit(wiki, written, reader, lease, manifest)
        result.bytes_uploaded += written.bytes_uploaded
        result.wiki_outcome = "completed"
        result.wiki_snapshot_id = snapshot_id

    def _covered_by(self, result: ArchiveResult, latest: Manifest, prepared: Prepared) -> None:
        """Another run committed this state, or a newer one, while this run cloned."""
        self.log.info(
            "%s: snapshot %s already holds this clone's state or a newer one; nothing written",
            prepared.repo_id,
            latest.snapshot_id,
        )
        result.outcome = "unchanged"
        result.snapshot_id = latest.snapshot_id
        result.head_commit = latest.head_commit
        result.default_branch = latest.default_branch
        result.refs_digest = refs_digest(latest.refs)
        result.duration_s = round(time.time() - prepared.started_at, 3)

    def _write_snapshot(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        reader: SnapshotReader[Manifest],
        latest: Manifest | None,
        lease: Lease,
    ) -> None:
        """The code's snapshot: bundle, LFS objects and `tree/`, `tree.json`, `lfs.json`, then
        the manifest (`_commit`)."""
        repo = LocalRepo(prepared.repo_path, self.git)
        if prepared.base is not None and reader.manifest(prepared.base) is None:
            # Its base went (a run that committed meanwhile applied retention): bundle in full.
            self.log.info("%s: base %s is gone: a full bundle", prepared.bucket, prepared.base)
            repo.create_bundle(prepared.bundle_path)
            prepared.base = None
        entries, submodules = repo.tree(prepared.head_commit)
        previous = reader.tree_index(latest.snapshot_id) if latest else TreeIndex()
        # Encrypted, no `tree/` is written, and the one a plaintext snapshot left is removed:
        # its files would be the plaintext the encryption is there to keep out of the store.
        tree_entries = [] if self.sealing else entries
        # A fresh snapshot repairs: it looks at what `tree/` holds, whatever tree.json says.
        quiet = lease.quiet and prepared.fresh is None
        existing = stored_tree(self.store, prepared.bucket, previous, quiet)
        sync = plan_tree(existing, tree_entries, previous, prepared.lfs)
        bundle = self._upload_objects(prepared, result, repo, sync, lease)
        result.files_uploaded = sync.uploaded
        result.files_deleted = len(sync.stale)
        result.tree_files = len(tree_entries)
        result.tree_bytes = sum(sync.stored_size(e) for e in tree_entries)
        if self.sealing is None:  # an encrypted snapshot has no tree/, hence no tree.json
            self._put_tree_index(prepared, result, entries, sync, lease)
        lfs_summary = self._put_lfs_index(prepared, result, lease)
        assert prepared.snapshot_id is not None
        # HEAD's LFS files in tree/: stored with their content, or (object missing) as the
        # pointer text git holds, listed in `lfs_pointers`.
        head_lfs = prepared.lfs.head if prepared.lfs and not self.sealing else {}
        tree = TreeSummary(
            files=result.tree_files,
            bytes=result.tree_bytes,
            index=None if self.sealing else snapshot_key(prepared.snapshot_id, TREE_INDEX),
            lfs_files=len(head_lfs),
            lfs_pointers=sorted(set(head_lfs) - set(sync.lfs_content)),
        )
        manifest = self._manifest(prepared, result, bundle)
        manifest.tree, manifest.submodules = tree, submodules
        manifest.lfs, manifest.keep = lfs_summary, result.keep
        self._commit(prepared, result, reader, lease, manifest)

    def _upload_objects(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        repo: LocalRepo,
        sync: TreeSync,
        lease: Lease,
    ) -> BundleRecord:
        """Upload the bundle, the LFS objects the bucket lacks and `tree/` in parallel; the
        etags of `tree/` go into `sync.etags`. Returns the manifest's `bundle`."""
        seal = self.sealing.seal if self.sealing else None
        lfs_todo = (
            lfs.unstored(self.store, prepared.bucket, prepared.lfs, seal) if prepared.lfs else {}
        )
        bundle, bundle_key = self._stored_bundle(prepared)
        result.bundle_size = bundle.stat().st_size
        uploader = ParallelUploader(
            self.store,
            prepared.bucket,
            self.settings.upload_workers,
            logger=self.log,
            progress=self.progress,
            every_s=self.settings.progress_every_s,
            guard=lease.check,  # a writer that lost its lease stops at once, queue and all
        )
        uploader.expect(
            1 + len(lfs_todo) + sync.uploaded,
            result.bundle_size + sum(lfs_todo.values()) + sync.upload_bytes,
        )
        try:
            uploader.put_file(bundle_key, bundle)
            if prepared.lfs is not None:
                lease.check()
                result.lfs_uploaded = lfs.upload(
                    uploader, prepared.repo_path, lfs_todo, self.sealing, prepared.work_dir
                )
            sync_tree(self.store, repo, sync, uploader, prepared.work_dir, lease)
            result.bytes_uploaded = uploader.wait()
        except PreconditionFailed as exc:
            lease.check()  # raises when the lease was lost: then that is the reason
            raise TransientError(
                f"an object of tree/ changed while snapshot {prepared.snapshot_id} was written "
                "(a writer that lost the lease was still finishing); nothing was committed, a "
                "retry repairs tree/"
            ) from exc
        finally:
            uploader.close()
        sync.etags.update(uploader.etags)
        return _bundle_record(bundle, bundle_key, uploader.etags[bundle_key])

    def _put_tree_index(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        entries: list[TreeEntry],
        sync: TreeSync,
        lease: Lease,
    ) -> None:
        """`tree.json`, written to a file beside the clone and uploaded."""
        assert prepared.snapshot_id is not None
        index = prepared.bundle_path.with_name(TREE_INDEX)
        write_tree_index(index, prepared.head_commit, entries, sync.etags, sync.lfs_content)
        lease.check()
        self.store.put_file(
            prepared.bucket,
            snapshot_key(prepared.snapshot_id, TREE_INDEX),
            index,
            content_type="application/json",
        )
        result.bytes_uploaded += index.stat().st_size

    def _put_lfs_index(
        self, prepared: Prepared, result: ArchiveResult, lease: Lease
    ) -> LfsSummary | None:
        """`lfs.json` when LFS objects are kept; returns the manifest's `lfs`."""
        if prepared.lfs is None:
            return None
        assert prepared.snapshot_id is not None
        index_key = snapshot_key(prepared.snapshot_id, lfs.LFS_INDEX)
        summary = prepared.lfs.summary(index_key)
        result.lfs_objects, result.lfs_bytes = summary.objects, summary.bytes
        result.held_lfs(summary)
        lease.check()
        index = lfs.index_doc(prepared.lfs, self.sealing)
        result.bytes_uploaded += self._put_json(prepared.bucket, index_key, index)
        return summary

    def _manifest(
        self, prepared: Prepared, result: ArchiveResult, bundle: BundleRecord
    ) -> Manifest:
        """The manifest as a wiki's has it, dated now; a code snapshot's adds `tree`,
        `submodules`, `lfs` and `keep`."""
        snapshot_id = prepared.snapshot_id
        assert snapshot_id is not None
        result.duration_s = round(time.time() - prepared.started_at, 3)
        manifest = Manifest(
            repo_id=prepared.repo_id,
            repo_url=prepared.repo_url,
            snapshot_id=snapshot_id,
            head_commit=prepared.head_commit,
            head_ref=prepared.head_ref,
            default_branch=prepared.default_branch,
            refs=prepared.refs,
            bundle=bundle,
            created_at=datetime.now(UTC).isoformat(),
            duration_s=result.duration_s,
            repovault_version=__version__,
            request_id=prepared.request_id,
            run_id=prepared.run_id,
        )
        if prepared.base is not None:  # absent: a full bundle
            manifest.base = prepared.base
        if self.sealing:
            # Absent: plaintext. Else the age recipients the bundle (and LFS objects) are
            # encrypted to; `bundle` then describes the stored ciphertext.
            manifest.encryption = self.sealing.record()
        return manifest

    def _commit(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        reader: SnapshotReader[Manifest],
        lease: Lease,
        manifest: Manifest,
    ) -> None:
        """Write the manifest (the commit marker), move `latest.json`, apply retention: the
        same last steps for the repository and for its wiki."""
        layout, snapshot_id = prepared.layout, manifest.snapshot_id
        lease.confirm()  # the manifest is the commit marker: only the lease holder writes it
        result.bytes_uploaded += self._put_json(
            prepared.bucket, layout.snapshot_key(snapshot_id, MANIFEST), manifest
        )
        lease.confirm()
        result.bytes_uploaded += move_latest(
            self.store, prepared.bucket, layout, latest_of(manifest, layout), self.log
        )
        clone = LocalRepo(prepared.repo_path, self.git)  # what retention's pins compare with
        policy = Policy.from_settings(self.settings)
        result.snapshots_deleted = apply_retention(reader, lease, clone, policy, self.log)

    def _stored_bundle(self, prepared: Prepared) -> tuple[Path, str]:
        """The bundle file to upload and its key: encrypted beside the clone (streamed) when
        REPOVAULT_ENCRYPT_RECIPIENTS is set."""
        assert prepared.snapshot_id is not None
        key = prepared.layout.snapshot_key(prepared.snapshot_id, BUNDLE)
        if self.sealing is None:
            return prepared.bundle_path, key
        sealed = prepared.bundle_path.with_name(BUNDLE + crypt.AGE_SUFFIX)
        crypt.encrypt_file(self.sealing, prepared.bundle_path, sealed)
        return sealed, key + crypt.AGE_SUFFIX

    def _put_json(self, bucket: str, key: str, record: BaseModel) -> int:
        """A document, as set (the fields a reader of older snapshots expects, no others)."""
        data = json_bytes(record, exclude_unset=True)
        self.store.put_bytes(bucket, key, data, content_type="application/json")
        return len(data)


def _bundle_record(path: Path, key: str, etag: str) -> BundleRecord:
    """The manifest's `bundle`: key, size and sha256 of the object as stored (the ciphertext
    when encrypted: checkable without the key; age authenticates the plaintext), and the etag
    the store answered for it (the quick `restorable` pass lists it again)."""
    return BundleRecord(key=key, size=path.stat().st_size, sha256=file_sha256(path), etag=etag)
