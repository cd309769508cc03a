"""The snapshot writer (docs/contract.md, "Object layout"): bundle, incremental `tree/`,
manifest, `latest.json`.

Order of writes is the safety argument: the bundle and `tree/` first, `tree.json` and
`manifest.json` next (the manifest is the commit marker), `latest.json` only then, retention
last. A run that dies anywhere before the manifest leaves readers on the previous snapshot.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from repovault_pipeline import __version__
from repovault_pipeline.core.common.errors import (
    ArchiveError,
    PreconditionFailed,
    RepoNotFound,
    TransientError,
)
from repovault_pipeline.core.common.identity import RepoRef, bucket_name, wiki_ref
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Keep, Settings
from repovault_pipeline.core.lineage.requests import LFS_MISSING, WIKI_FAILED, final_status
from repovault_pipeline.core.vault import crypt, lfs
from repovault_pipeline.core.vault.gitops import (
    GitClient,
    LocalRepo,
    RemoteState,
    TreeEntry,
    refs_digest,
)
from repovault_pipeline.core.vault.lease import FREE, Lease, inspect
from repovault_pipeline.core.vault.lfs import LfsObjects
from repovault_pipeline.core.vault.store import (
    ObjectInfo,
    ObjectStore,
    ParallelUploader,
    UploadProgress,
    file_sha256,
)
from repovault_pipeline.core.vault.treekeys import TREE, path_bytes, tree_key
from repovault_pipeline.core.vault.workdir import make_work_dir, remove_work_dir, sweep_orphans

log = logging.getLogger(__name__)

LATEST_KEY = "latest.json"
SNAPSHOTS = "snapshots/"
MANIFEST = "manifest.json"
BUNDLE = "repo.bundle"
TREE_INDEX = "tree.json"
IN_MEMORY_BLOB = 1024 * 1024
MAX_CLOCK_AHEAD_S = 300  # a previous snapshot dated further ahead is a clock fault, not a wait
MAX_PATH_METADATA = 1024  # base64 of an encoded path kept in object metadata (S3: 2 KB in all)


@dataclass(frozen=True)
class Layout:
    """Where one git repository's snapshots live in the bucket: the repository's own at the
    root (with `tree/` of HEAD), its wiki under `wiki/` (bundle and manifest only). Both follow
    the same rules: manifest last, then `latest.json`, retention."""

    prefix: str = ""
    tree: bool = True

    @property
    def latest_key(self) -> str:
        return f"{self.prefix}{LATEST_KEY}"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}{SNAPSHOTS}"

    def snapshot_key(self, snapshot_id: str, name: str) -> str:
        return f"{self.snapshots}{snapshot_id}/{name}"


CODE = Layout()
WIKI = Layout("wiki/", tree=False)


def snapshot_key(snapshot_id: str, name: str) -> str:
    return CODE.snapshot_key(snapshot_id, name)


def _stamp(snapshot_id: str) -> str:
    return snapshot_id.split("-", 1)[0]


def new_snapshot_id(head_commit: str, previous: str | None = None) -> str:
    """`<UTC yyyymmddTHHMMSSZ>-<12 hex of HEAD>`, strictly after `previous` so that ids sort in
    the order snapshots were taken (two runs within one second wait for the next). A `previous`
    dated more than MAX_CLOCK_AHEAD_S ahead (a writer with a fast clock) is an ArchiveError
    saying so, not a wait until that date."""
    while True:
        now = datetime.now(UTC)
        stamp = f"{now:%Y%m%dT%H%M%SZ}"
        if previous is None or stamp > _stamp(previous):
            return f"{stamp}-{head_commit[:12]}"
        ahead = _stamp_time(previous) - now
        if ahead.total_seconds() > MAX_CLOCK_AHEAD_S:
            raise ArchiveError(
                f"the latest snapshot {previous} is dated {ahead.total_seconds() / 3600:.1f} h "
                "ahead of this host's clock: "
                "the clock of the host that wrote it (or of this one) is wrong; fix the clocks "
                "(NTP), then delete that snapshot or wait until its date; nothing was written"
            )
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)


def _stamp_time(snapshot_id: str) -> datetime:
    try:
        return datetime.strptime(_stamp(snapshot_id), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)  # not a snapshot id RepoVault wrote: wait as for any other


@dataclass
class Prepared:
    """A clone on local disk, bundled, with its HEAD tree listed: ready to upload.

    `work_dir` is None when the remote matched the latest snapshot and nothing was cloned.
    """

    repo_id: str
    repo_url: str
    bucket: str
    head_commit: str
    default_branch: str | None
    refs: dict[str, str]
    work_dir: Path | None = None
    snapshot_id: str | None = None
    head_ref: str | None = None
    started_at: float = field(default_factory=time.time)
    clone_s: float = 0.0
    request_id: str | None = None  # written into the manifest: reconcile recognises its snapshot
    run_id: str | None = None
    keep: Keep = field(default_factory=Keep)
    lfs: LfsObjects | None = None  # None: LFS objects not kept by this run
    layout: Layout = CODE
    wiki: Prepared | None = None  # the wiki's clone; None: no wiki (or not kept)
    wiki_found: bool = False  # the remote has a wiki
    # latest.json names a missing or incomplete snapshot: an unchanged run still repairs it.
    pointer_damage: str | None = None
    # Why this run writes a fresh snapshot although the remote's refs equal the latest one's
    # (a forced request, a latest snapshot that does not restore); None: only if they moved.
    fresh: str | None = None
    wiki_error: str | None = None  # why the wiki could not be cloned (the code still is kept)
    held_lfs: dict | None = None  # unchanged: the `lfs` summary of the snapshot that holds it

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
    outcome: str  # of the code snapshot: "completed" or "unchanged"
    snapshot_id: str | None
    head_commit: str
    default_branch: str | None
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
    refs_digest: str | None = None  # of the refs the latest snapshot holds: refresh compares
    lfs_objects: int = 0
    lfs_bytes: int = 0
    lfs_uploaded: int = 0
    lfs_missing: int = 0
    keep: dict[str, bool] = field(default_factory=dict)
    wiki_outcome: str | None = None  # completed, unchanged, absent, failed; None: not kept
    wiki_snapshot_id: str | None = None
    wiki_refs_digest: str | None = None  # of the wiki's refs (none: no wiki); None: not kept
    fresh: str | None = None  # why a snapshot was written although nothing changed
    lfs_missing_paths: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # parts kept missing: name -> detail

    @property
    def status(self) -> str:
        """The request's status: `partial` when a part it asked to keep is missing."""
        return final_status(self.outcome, self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class TreeIndex:
    """A snapshot's `tree.json`: path -> {mode, sha, size, etag[, key, path_b64]}, and when the
    store wrote it (its clock), which bounds when every object it vouches for was written."""

    files: dict[str, dict]
    written: float = 0.0


@dataclass(frozen=True)
class Pointer:
    """`latest.json` as readers use it. `manifest` is the snapshot it names when that one is
    complete; when it names a missing or incomplete snapshot, is unreadable, or is missing
    beside complete snapshots (a writer with a fast clock, an operator's mistake), `damage`
    says so in one line and `manifest` is the newest complete snapshot instead (None when
    there is none): a damaged pointer hides no snapshot, and the next run repairs it."""

    named: str | None  # the snapshot id latest.json names (None: no readable pointer)
    manifest: dict | None
    damage: str | None = None
    fields: dict = field(default_factory=dict)  # what latest.json holds

    @property
    def repo_id(self) -> str | None:
        """As latest.json records it: names the repository of a bucket with no manifest."""
        repo_id = self.fields.get("repo_id")
        return repo_id if isinstance(repo_id, str) else None


class SnapshotReader:
    """What readers see of one bucket: only snapshots whose manifest exists."""

    def __init__(self, store: ObjectStore, bucket: str, layout: Layout = CODE) -> None:
        self.store = store
        self.bucket = bucket
        self.layout = layout

    def _json(self, key: str) -> dict | None:
        raw = self.store.get_bytes(self.bucket, key)
        return json.loads(raw) if raw is not None else None

    def latest_id(self) -> str | None:
        """The snapshot `latest.json` points at, or None for a repository never archived."""
        pointer = self._json(self.layout.latest_key)
        return pointer["snapshot_id"] if pointer else None

    def latest(self) -> dict | None:
        """The latest complete manifest: the one `latest.json` points at, or the newest complete
        one when the pointer is damaged (`pointer` says why); None when none is stored."""
        return self.pointer().manifest

    def pointer(self) -> Pointer:
        """`latest.json` checked against the snapshots it may name (see `Pointer`)."""
        key = self.layout.latest_key
        raw = self.store.get_bytes(self.bucket, key)
        named, doc = _pointer(raw)
        manifest = self.manifest(named) if named else None
        if manifest is not None:
            return Pointer(named, manifest, fields=doc)
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
        return Pointer(named, fallback, damage, doc)

    def manifest(self, snapshot_id: str) -> dict | None:
        return self._json(self.layout.snapshot_key(snapshot_id, MANIFEST))

    def lfs_index(self, snapshot_id: str) -> dict:
        """A snapshot's `lfs.json` (`objects`, `missing`: oid -> size), empty when it kept none."""
        return self._json(snapshot_key(snapshot_id, lfs.LFS_INDEX)) or {}

    def tree_index(self, snapshot_id: str) -> TreeIndex:
        found = self.store.read(self.bucket, snapshot_key(snapshot_id, TREE_INDEX))
        if found is None:
            return TreeIndex({})
        return TreeIndex(json.loads(found.data).get("files", {}), found.modified)

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
            meta = {"mode": entry.mode, "sha": entry.sha, "size": entry.size, "etag": etags[key]}
            if entry.path in lfs_content:
                meta["lfs"], meta["size"] = lfs_content[entry.path]
            if key != TREE + entry.path:
                meta["key"] = key
                meta["path_b64"] = base64.b64encode(path_bytes(entry.path)).decode()
            out.write(f"{',' if n else ''}\n  {json.dumps(entry.path)}: {json.dumps(meta)}")
        out.write(f'\n }},\n "head_commit": {json.dumps(head_commit)}\n}}\n')


class SnapshotWriter:
    """Archives one repository into its bucket."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        logger: logging.Logger | None = None,
        progress: Callable[[UploadProgress], None] | None = None,
    ) -> None:
        """`progress` hears how far an upload is, every REPOVAULT_PROGRESS_EVERY_S at most
        (default: its `line` in the log, which `repovault submit --wait` reads back)."""
        self.settings = settings
        self.store = store
        self.log = logger or log
        self.progress = progress or (lambda done: self.log.info(done.line()))
        self.git = GitClient(settings, self.log)
        self.sealing = crypt.sealing(settings.encrypt_recipients)

    def prepare(
        self,
        ref: RepoRef,
        work_dir: Path | None = None,
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        keep: Keep | None = None,
        force: bool = False,
        damaged: Mapping[str, str] | None = None,
    ) -> Prepared:
        """Clone, bundle, fetch LFS objects and list HEAD, unless the remote's refs equal the
        latest manifest's and the last writer of the bucket finished (else `tree/` may need a
        repair), and the latest snapshot restores as far as a cheap look tells (its bundle is
        stored with its size, it is not among the `damaged` ids: snapshot id -> why, e.g. from
        the last `restorable` check). `force` writes a fresh full snapshot regardless.

        The clone goes to `work_dir` (emptied first) or to a fresh folder under
        REPOVAULT_WORK_DIR; clones of runs that died are removed first. `keep` is the request's
        choice of extras (default: the settings').
        """
        keep = keep or self.settings.keep
        started = time.time()
        sweep_orphans(self.settings.work_dir)  # clones of runs that died, however they died
        bucket = bucket_name(ref.repo_id, self.settings.bucket_prefix)
        remote = self.git.ls_remote(ref)
        if not remote.refs:
            raise ArchiveError("the repository is empty: it has no branch or tag to archive")
        fresh = "forced by the request" if force else None
        known = damaged or {}
        code = self._prepare(ref, bucket, CODE, remote, work_dir, keep, started, fresh, known)
        code.request_id, code.run_id = request_id, run_id
        if not keep.wiki:
            return code
        try:
            code.wiki_found, code.wiki = self._prepare_wiki(ref, bucket, work_dir, keep, fresh)
        except ArchiveError as exc:
            # The code is kept all the same; the request ends `partial` (`wiki_failed`) and
            # the next run tries the wiki again.
            code.wiki_error = mask_secrets(str(exc))
            self.log.warning("the wiki of %s could not be archived: %s", ref.repo_id, exc)
        except BaseException:
            discard(code)
            raise
        return code

    def _prepare_wiki(
        self, ref: RepoRef, bucket: str, work_dir: Path | None, keep: Keep, fresh: str | None
    ) -> tuple[bool, Prepared | None]:
        """The wiki (`<repo>.wiki.git`), when the remote has one: a forge answers "not found"
        for a repository without a wiki, or serves it without a ref before its first page."""
        wiki = wiki_ref(ref)
        try:
            remote = self.git.ls_remote(wiki)
        except RepoNotFound:
            self.log.info("%s has no wiki", ref.repo_id)
            return False, None
        if not remote.refs:
            return False, None
        wiki_dir = work_dir.with_name(f"{work_dir.name}-wiki") if work_dir else None
        prepared = self._prepare(wiki, bucket, WIKI, remote, wiki_dir, keep, time.time(), fresh)
        return True, prepared

    def _prepare(
        self,
        ref: RepoRef,
        bucket: str,
        layout: Layout,
        remote: RemoteState,
        work_dir: Path | None,
        keep: Keep,
        started: float,
        fresh: str | None = None,
        damaged: Mapping[str, str] | None = None,
    ) -> Prepared:
        """Clone one repository (the code or its wiki) into a work folder, bundle it and fetch
        its LFS objects, unless the latest snapshot of `layout` holds what the remote has (and
        nothing calls for a `fresh` one)."""
        pointer = SnapshotReader(self.store, bucket, layout).pointer()
        if pointer.damage:
            self.log.warning("%s: %s; this run repairs it", bucket, pointer.damage)
        latest = pointer.manifest
        # Only `tree/` can need a repair after a run that died: a wiki has none.
        settled = latest is None or not layout.tree or _settled(self.store, bucket)
        if fresh is None and settled and _matches(latest, remote.refs, remote.default_branch):
            fresh = (
                (damaged or {}).get(latest["snapshot_id"])
                or self._damage(bucket, latest)
                or self._resealed(latest)
                or (self._tree_drift(bucket, latest) if layout.tree else None)
            )
            if fresh is None:
                self.log.info("%s unchanged since snapshot %s", ref.url, latest["snapshot_id"])
                return self._unchanged(ref, bucket, latest, started, keep, layout, pointer.damage)
        if fresh is not None and latest is not None:
            self.log.warning(
                "%s: writing a fresh snapshot after %s: %s", ref.url, latest["snapshot_id"], fresh
            )

        label = f"{bucket}-wiki" if layout is WIKI else bucket
        work_dir = make_work_dir(self.settings.work_dir, label, work_dir)
        try:
            repo = self.git.clone(ref, work_dir / "repo.git")
            refs = repo.refs()
            head = repo.head()
            if fresh is None and settled and _matches(latest, refs, head.branch):
                remove_work_dir(work_dir)
                return self._unchanged(ref, bucket, latest, started, keep, layout, pointer.damage)
            clone_done = time.time()
            self.log.info(
                "cloned %s: %d refs, HEAD %s (%s)",
                ref.repo_id,
                len(refs),
                head.commit[:12],
                head.ref,
            )
            snapshot_id = new_snapshot_id(head.commit, latest["snapshot_id"] if latest else None)
            repo.create_bundle(work_dir / BUNDLE)
            kept_lfs = None
            if keep.lfs and layout is CODE:
                kept_lfs = lfs.LfsObjects()
                if lfs.uses_lfs(repo):
                    kept_lfs = lfs.fetch(repo, ref)
                    kept_lfs.head = lfs.head_files(repo, head.commit)
        except BaseException:
            remove_work_dir(work_dir)
            raise
        return Prepared(
            repo_id=ref.repo_id,
            repo_url=mask_secrets(ref.url),
            bucket=bucket,
            head_commit=head.commit,
            default_branch=head.branch,
            refs=refs,
            work_dir=work_dir,
            snapshot_id=snapshot_id,
            head_ref=head.ref,
            started_at=started,
            clone_s=clone_done - started,
            keep=keep,
            lfs=kept_lfs,
            layout=layout,
            fresh=fresh if latest is not None else None,
        )

    def _damage(self, bucket: str, latest: dict) -> str | None:
        """What one listing tells of the latest snapshot's bundle (the object a restore needs
        first): missing, or not the size its manifest records. None: it looks whole."""
        bundle = latest["bundle"]
        found = next(
            (i for i in self.store.list(bucket, bundle["key"]) if i.key == bundle["key"]), None
        )
        if found is None:
            return f"its bundle {bundle['key']} is missing"
        if found.size != int(bundle["size"]):
            return f"its bundle is {found.size} bytes but its manifest says {bundle['size']}"
        return None

    def _resealed(self, latest: dict) -> str | None:
        """Why the latest snapshot must be written again although nothing changed: it is not
        encrypted to REPOVAULT_ENCRYPT_RECIPIENTS (encryption switched on, off, or to other
        keys; switched on, the fresh snapshot also removes the plaintext `tree/`)."""
        if crypt.Sealing.of(latest) == self.sealing:
            return None
        if self.sealing is None:
            return "REPOVAULT_ENCRYPT_RECIPIENTS is unset but the latest snapshot is encrypted"
        return "the latest snapshot is not encrypted to REPOVAULT_ENCRYPT_RECIPIENTS"

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

    def _tree_drift(self, bucket: str, latest: dict) -> str | None:
        """What one listing of `tree/` (one request per 1,000 objects, no download) tells
        against the latest snapshot's `tree.json`: objects missing, extra, or changed (another
        etag, or written after that `tree.json`: a writer that lost its lease, a run that
        died, a hand edit). None: `tree/` is that snapshot's HEAD."""
        index = SnapshotReader(self.store, bucket).tree_index(latest["snapshot_id"])
        if not index.files:
            return None  # a snapshot written before tree.json recorded etags: nothing to match
        wanted = {meta.get("key") or TREE + path: meta for path, meta in index.files.items()}
        changed, extra = [], []
        for info in self.store.list(bucket, TREE):
            meta = wanted.pop(info.key, None)
            if meta is None:
                extra.append(info.key)
            elif meta.get("etag") != info.etag or int(info.modified) > int(index.written):
                changed.append(info.key)
        missing = sorted(wanted)
        if not (changed or extra or missing):
            return None
        first = (changed + extra + missing)[:3]
        return (
            f"tree/ differs from snapshot {latest['snapshot_id']}'s {TREE_INDEX}: "
            f"{len(changed)} changed, {len(extra)} extra, {len(missing)} missing "
            f"(e.g. {', '.join(first)})"
        )

    def _unchanged(
        self,
        ref: RepoRef,
        bucket: str,
        latest: dict,
        started: float,
        keep: Keep,
        layout: Layout,
        pointer_damage: str | None = None,
    ) -> Prepared:
        return Prepared(
            repo_id=ref.repo_id,
            repo_url=mask_secrets(ref.url),
            bucket=bucket,
            head_commit=latest["head_commit"],
            default_branch=latest["default_branch"],
            refs=latest["refs"],
            snapshot_id=latest["snapshot_id"],
            head_ref=latest.get("head_ref"),
            started_at=started,
            clone_s=time.time() - started,
            keep=keep,
            layout=layout,
            pointer_damage=pointer_damage,
            held_lfs=latest.get("lfs") if keep.lfs and layout is CODE else None,
        )

    def upload(self, prepared: Prepared) -> ArchiveResult:
        """Under the bucket's lease: write the snapshot in commit order, move `latest.json`
        forward, apply retention. A run whose clone is older than the latest snapshot, or
        equal to it, writes nothing (`unchanged`)."""
        result = ArchiveResult(
            repo_id=prepared.repo_id,
            repo_url=prepared.repo_url,
            bucket=prepared.bucket,
            outcome="unchanged" if prepared.unchanged else "completed",
            snapshot_id=prepared.snapshot_id,
            head_commit=prepared.head_commit,
            default_branch=prepared.default_branch,
            clone_s=round(prepared.clone_s, 3),
            refs_digest=refs_digest(prepared.refs),
            # Recorded as chosen; metadata left to REPOVAULT_KEEP_METADATA is not a choice here.
            keep={k: v for k, v in asdict(prepared.keep).items() if v is not None},
        )
        wiki = prepared.wiki
        if prepared.keep.wiki:
            result.wiki_outcome = "unchanged" if prepared.wiki_found else "absent"
            result.wiki_snapshot_id = wiki.snapshot_id if wiki else None
            result.wiki_refs_digest = refs_digest(wiki.refs if wiki else {})
        if prepared.wiki_error:
            result.wiki_outcome = "failed"
            result.reasons[WIKI_FAILED] = prepared.wiki_error
        wiki_changed = wiki is not None and not wiki.unchanged
        damaged = [p for p in (prepared, wiki) if p is not None and p.pointer_damage]
        if prepared.unchanged and not wiki_changed:
            _held_lfs(result, prepared.held_lfs)
        if prepared.unchanged and not wiki_changed and not damaged:
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
            if not prepared.unchanged:
                reader = SnapshotReader(self.store, prepared.bucket)
                latest = reader.latest()
                rewrite = lease.repair or prepared.fresh is not None
                if latest is not None and _already_held(latest, prepared, rewrite):
                    self._covered_by(result, latest, prepared)
                    _held_lfs(result, latest.get("lfs") if prepared.keep.lfs else None)
                else:
                    self._write_snapshot(prepared, result, reader, latest, lease)
                    result.fresh = prepared.fresh
                    lease.repair = False  # tree/ is this snapshot's HEAD now
            else:
                _held_lfs(result, prepared.held_lfs)
            if wiki_changed:
                assert wiki is not None
                self._write_wiki(wiki, result, lease)
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

    def _repair_latest(self, bucket: str, layout: Layout, lease: Lease) -> int:
        """Under the lease: point a `latest.json` that names a missing or incomplete snapshot
        at the newest complete one (a snapshot this run wrote has moved it already)."""
        pointer = SnapshotReader(self.store, bucket, layout).pointer()
        if not pointer.damage or pointer.manifest is None:
            return 0
        manifest = pointer.manifest
        lease.confirm()
        written = move_latest(self.store, bucket, layout, _latest_doc(manifest, layout), self.log)
        self.log.warning(
            "%s: %s; repaired: it names %s now", bucket, pointer.damage, manifest["snapshot_id"]
        )
        return written

    def _write_wiki(self, wiki: Prepared, result: ArchiveResult, lease: Lease) -> None:
        """The wiki's snapshot under `wiki/`: bundle, manifest (last), `wiki/latest.json`,
        retention; skipped when a snapshot taken meanwhile holds it already."""
        reader = SnapshotReader(self.store, wiki.bucket, WIKI)
        latest = reader.latest()
        if latest is not None and _already_held(latest, wiki, repair=wiki.fresh is not None):
            result.wiki_snapshot_id = latest["snapshot_id"]
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
        self.store.put_file(wiki.bucket, key, bundle)
        written.bytes_uploaded = written.bundle_size
        self._commit(wiki, written, reader, lease, _bundle_record(bundle, key), {})
        result.bytes_uploaded += written.bytes_uploaded
        result.wiki_outcome = "completed"
        result.wiki_snapshot_id = snapshot_id

    def _covered_by(self, result: ArchiveResult, latest: dict, prepared: Prepared) -> ArchiveResult:
        """Another run committed this state, or a newer one, while this run cloned."""
        self.log.info(
            "%s: snapshot %s already holds this clone's state or a newer one; nothing written",
            prepared.repo_id,
            latest["snapshot_id"],
        )
        result.outcome = "unchanged"
        result.snapshot_id = latest["snapshot_id"]
        result.head_commit = latest["head_commit"]
        result.default_branch = latest["default_branch"]
        result.refs_digest = refs_digest(latest["refs"])
        result.duration_s = round(time.time() - prepared.started_at, 3)
        return result

    def _write_snapshot(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        reader: SnapshotReader,
        latest: dict | None,
        lease: Lease,
    ) -> None:
        snapshot_id = prepared.snapshot_id
        assert snapshot_id is not None
        repo = LocalRepo(prepared.repo_path, self.git)
        entries, submodules = repo.tree(prepared.head_commit)
        previous = reader.tree_index(latest["snapshot_id"]) if latest else TreeIndex({})
        seal = self.sealing.seal if self.sealing else None
        lfs_todo = (
            lfs.unstored(self.store, prepared.bucket, prepared.lfs, seal) if prepared.lfs else {}
        )
        # Encrypted, no `tree/` is written, and the one a plaintext snapshot left is removed:
        # its files would be the plaintext the encryption is there to keep out of the store.
        tree_entries = [] if self.sealing else entries
        sync = self._plan_tree(prepared.bucket, tree_entries, previous, prepared.lfs)
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
            bundle_record = _bundle_record(bundle, bundle_key)
            if prepared.lfs is not None:
                lease.check()
                result.lfs_uploaded = lfs.upload(
                    uploader, prepared.repo_path, lfs_todo, self.sealing, prepared.work_dir
                )
            self._sync_tree(repo, sync, uploader, prepared.work_dir, lease)
            result.bytes_uploaded = uploader.wait()
        except PreconditionFailed as exc:
            lease.check()  # raises when the lease was lost: then that is the reason
            raise TransientError(
                f"an object of tree/ changed while snapshot {snapshot_id} was written (a writer "
                "that lost the lease was still finishing); nothing was committed, a retry "
                "repairs tree/"
            ) from exc
        finally:
            uploader.close()
        etags = {**sync.etags, **uploader.etags}
        result.files_uploaded = sync.uploaded
        result.files_deleted = len(sync.stale)
        result.tree_files = len(tree_entries)
        result.tree_bytes = sum(sync.stored_size(e) for e in tree_entries)

        if self.sealing is None:  # an encrypted snapshot has no tree/, hence no tree.json
            index = prepared.bundle_path.with_name(TREE_INDEX)
            write_tree_index(index, prepared.head_commit, entries, etags, sync.lfs_content)
            lease.check()
            self.store.put_file(
                prepared.bucket,
                snapshot_key(snapshot_id, TREE_INDEX),
                index,
                content_type="application/json",
            )
            result.bytes_uploaded += index.stat().st_size
        lfs_summary: dict[str, object] | None = None
        pointers: list[str] = []
        if prepared.lfs is not None:
            result.lfs_objects = len(prepared.lfs.objects)
            result.lfs_bytes = prepared.lfs.bytes
            lfs_summary = {
                "objects": result.lfs_objects,
                "bytes": result.lfs_bytes,
                "missing": len(prepared.lfs.missing),
                "missing_paths": prepared.lfs.missing_paths(),
                "index": snapshot_key(snapshot_id, lfs.LFS_INDEX),
            }
            _held_lfs(result, lfs_summary)
            if self.sealing is None:
                pointers = sorted(set(prepared.lfs.head) - set(sync.lfs_content))
            lease.check()
            result.bytes_uploaded += self._put_json(
                prepared.bucket,
                snapshot_key(snapshot_id, lfs.LFS_INDEX),
                lfs.index_doc(prepared.lfs, self.sealing),
            )
        extra = {
            "tree": {
                "files": result.tree_files,
                "bytes": result.tree_bytes,
                "index": None if self.sealing else snapshot_key(snapshot_id, TREE_INDEX),
                # HEAD's LFS files: stored with their content, or (object missing) as the
                # pointer text git holds, listed here.
                "lfs_files": len(prepared.lfs.head) if prepared.lfs and not self.sealing else 0,
                "lfs_pointers": pointers,
            },
            "submodules": submodules,
            "lfs": lfs_summary,
            "keep": result.keep,
        }
        self._commit(prepared, result, reader, lease, bundle_record, extra)

    def _commit(
        self,
        prepared: Prepared,
        result: ArchiveResult,
        reader: SnapshotReader,
        lease: Lease,
        bundle: dict,
        extra: dict,
    ) -> None:
        """Write the manifest (the commit marker), move `latest.json`, apply retention: the
        same last steps for the repository and for its wiki."""
        layout = prepared.layout
        snapshot_id = prepared.snapshot_id
        assert snapshot_id is not None
        result.duration_s = round(time.time() - prepared.started_at, 3)
        manifest = {
            "repo_id": prepared.repo_id,
            "repo_url": prepared.repo_url,
            "snapshot_id": snapshot_id,
            "head_commit": prepared.head_commit,
            "head_ref": prepared.head_ref,
            "default_branch": prepared.default_branch,
            "refs": prepared.refs,
            "bundle": bundle,
            # Absent: plaintext. Else the age recipients the bundle (and LFS objects) are
            # encrypted to; `bundle` then describes the stored ciphertext.
            **({"encryption": self.sealing.record()} if self.sealing else {}),
            **extra,
            "created_at": datetime.now(UTC).isoformat(),
            "duration_s": result.duration_s,
            "repovault_version": __version__,
            "request_id": prepared.request_id,
            "run_id": prepared.run_id,
        }
        lease.confirm()  # the manifest is the commit marker: only the lease holder writes it
        result.bytes_uploaded += self._put_json(
            prepared.bucket, layout.snapshot_key(snapshot_id, MANIFEST), manifest
        )
        lease.confirm()
        result.bytes_uploaded += move_latest(
            self.store, prepared.bucket, layout, _latest_doc(manifest, layout), self.log
        )
        clone = LocalRepo(prepared.repo_path, self.git)  # what retention's pins compare with
        result.snapshots_deleted = self._apply_retention(reader, lease, clone)

    def archive(self, ref: RepoRef) -> ArchiveResult:
        """prepare + upload + clean up: the whole archive of one repository."""
        prepared = self.prepare(ref)
        try:
            return self.upload(prepared)
        finally:
            discard(prepared)

    def _put_json(self, bucket: str, key: str, doc: dict) -> int:
        data = _json_bytes(doc)
        self.store.put_bytes(bucket, key, data, content_type="application/json")
        return len(data)

    def _plan_tree(
        self,
        bucket: str,
        entries: list[TreeEntry],
        previous: TreeIndex,
        kept_lfs: LfsObjects | None = None,
    ) -> _TreeSync:
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
        existing = {info.key: info for info in self.store.list(bucket, TREE)}
        wanted = {tree_key(e.path) for e in entries}
        sync = _TreeSync(stale=sorted(set(existing) - wanted), lfs_content=content)
        for entry in entries:
            key = tree_key(entry.path)
            stored = existing.get(key)
            before = previous.files.get(entry.path)
            lfs_oid = content[entry.path][0] if entry.path in content else None
            if (
                stored is not None
                and _in_place(entry, before, stored, previous.written)
                and (before or {}).get("lfs") == lfs_oid
            ):
                sync.etags[key] = stored.etag
                continue
            sync.expected[key] = stored.etag if stored is not None else None
            if lfs_oid is not None:
                sync.lfs_files.append((entry, lfs_oid))
            else:
                sync.blobs.append(entry)
        return sync

    def _sync_tree(
        self,
        repo: LocalRepo,
        sync: _TreeSync,
        uploader: ParallelUploader,
        work_dir: Path | None,
        lease: Lease,
    ) -> None:
        """Carry out `_plan_tree`'s plan."""
        if sync.stale:
            # Deleted first: MinIO refuses `a/b` while an object `a` exists (a file that
            # became a folder).
            lease.check()
            self.store.delete(uploader.bucket, sync.stale)
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
            metadata = _object_metadata(entry, key)
            content_type = _content_type(entry)
            kwargs: dict[str, Any] = {
                "metadata": metadata,
                "content_type": content_type,
                **sync.condition(key),
            }
            if entry.size <= IN_MEMORY_BLOB:
                uploader.put_bytes(key, blob.read(), **kwargs)
            else:
                fd, name = tempfile.mkstemp(dir=work_dir, prefix="blob-")
                with os.fdopen(fd, "wb") as out:
                    blob.copy_to(out)
                uploader.put_file(key, Path(name), remove_after=True, **kwargs)

    def _apply_retention(self, reader: SnapshotReader, lease: Lease, repo: LocalRepo) -> int:
        """Keep the newest REPOVAULT_KEEP_SNAPSHOTS complete snapshots, and older ones that
        alone hold commits (see `_deletable`); sweep incomplete ones. Runs under the lease, so
        no other live run is writing a snapshot here: an incomplete snapshot other than this
        run's is the leftover of a run that died."""
        lease.confirm()
        complete, incomplete = reader.snapshot_ids()
        keep = self.settings.keep_snapshots
        doomed = self._deletable(reader, complete[:keep], complete[keep:], repo)
        doomed += [s for s in incomplete if s != lease.snapshot_id]
        for snap in doomed:
            # The manifest goes first so a half-deleted snapshot is already invisible.
            self.store.delete(reader.bucket, [reader.layout.snapshot_key(snap, MANIFEST)])
            folder = reader.layout.snapshot_key(snap, "")
            rest = [i.key for i in self.store.list(reader.bucket, folder)]
            self.store.delete(reader.bucket, rest)
        if doomed:
            self.log.info("retention: deleted snapshots %s", ", ".join(doomed))
            if reader.layout is CODE:  # only the repository's own snapshots list LFS objects
                # Pinned snapshots stay with their LFS objects: sweep by what remains.
                self._sweep_lfs(reader, [s for s in complete if s not in doomed])
        return len([s for s in doomed if s in complete])

    def _deletable(
        self, reader: SnapshotReader, kept: list[str], older: list[str], repo: LocalRepo
    ) -> list[str]:
        """The snapshots past the retention count that may go: not one whose refs point at
        objects this run's clone (a fresh clone of every branch and tag: exactly what the
        newest snapshot holds) lacks and no retained snapshot names (a force-push rewrote
        history, a branch or tag was deleted): it is pinned, the only copy of those commits."""
        held: set[str] | None = None  # ref tips of the retained snapshots, read when needed
        doomed = []
        for snap in older:  # newest first: of several holding the same commits, the newest stays
            tips = _ref_tips(reader, snap)
            lost = repo.missing(tips)
            if lost:
                if held is None:  # kept[0] is this run's snapshot: the clone itself
                    held = set().union(*(_ref_tips(reader, other) for other in kept[1:]))
                if not lost <= held:
                    self.log.info(
                        "retention: snapshot %s kept, the only one holding %d ref tips no "
                        "newer snapshot has (history rewritten or refs deleted upstream)",
                        snap,
                        len(lost),
                    )
                    held |= tips
                    continue
            doomed.append(snap)
        return doomed

    def _sweep_lfs(self, reader: SnapshotReader, kept: list[str]) -> None:
        """Delete the LFS objects no remaining snapshot lists in its `lfs.json`."""
        stored = [info.key for info in self.store.list(reader.bucket, lfs.LFS_PREFIX)]
        if not stored:
            return
        wanted: set[str] = set()
        for snap in kept:
            wanted.update(lfs.index_keys(reader.lfs_index(snap)).values())
        unused = [key for key in stored if key not in wanted]
        if unused:
            self.store.delete(reader.bucket, unused)
            self.log.info("retention: deleted %d LFS objects no snapshot lists", len(unused))


@dataclass
class _TreeSync:
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


def _bundle_record(path: Path, key: str) -> dict[str, object]:
    """The manifest's `bundle`: key, size and sha256 of the object as stored (the ciphertext
    when encrypted: checkable without the key; age authenticates the plaintext)."""
    return {"key": key, "size": path.stat().st_size, "sha256": file_sha256(path)}


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


def _held_lfs(result: ArchiveResult, summary: dict | None) -> None:
    """`lfs_missing` when the snapshot the request ends with lacks LFS objects its history
    points to (`summary`: its manifest's `lfs`; None: LFS objects not kept)."""
    missing = int((summary or {}).get("missing") or 0)
    result.lfs_missing = missing
    result.lfs_missing_paths = list((summary or {}).get("missing_paths") or [])
    if missing:
        result.reasons[LFS_MISSING] = lfs.missing_detail(missing, result.lfs_missing_paths)


def _ref_tips(reader: SnapshotReader, snapshot_id: str) -> set[str]:
    return set((reader.manifest(snapshot_id) or {}).get("refs", {}).values())


def _json_bytes(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _latest_doc(manifest: dict, layout: Layout) -> dict:
    """The `latest.json` that names `manifest`'s snapshot."""
    return {
        "repo_id": manifest["repo_id"],
        "snapshot_id": manifest["snapshot_id"],
        "manifest": layout.snapshot_key(manifest["snapshot_id"], MANIFEST),
        "head_commit": manifest["head_commit"],
        "created_at": manifest["created_at"],
    }


def _pointer(raw: bytes | None) -> tuple[str | None, dict]:
    """The snapshot id a `latest.json` names (None when absent or unreadable) and its fields."""
    try:
        doc = json.loads(raw) if raw is not None else {}
    except ValueError:
        return None, {}
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshot_id"), str):
        return None, {}
    return doc["snapshot_id"] or None, doc


def move_latest(
    store: ObjectStore, bucket: str, layout: Layout, doc: dict, logger: logging.Logger
) -> int:
    """Point the layout's `latest.json` at `doc`'s snapshot, whose manifest is written, unless
    it names a newer complete snapshot already: read it, then write conditionally on what was
    read, so it never moves backwards. A pointer to a newer snapshot that is missing or
    incomplete is damage (a writer with a fast clock): it is replaced, and the log says so.
    Called under the bucket's lease; returns the bytes written."""
    key = layout.latest_key
    data = _json_bytes(doc)
    for _ in range(10):
        current = store.read(bucket, key)
        if current is not None and current.data == data:
            return 0
        named = _pointer(current.data)[0] if current else None
        if named is not None and named > doc["snapshot_id"]:
            if store.read(bucket, layout.snapshot_key(named, MANIFEST)) is not None:
                logger.warning("%s of %s stays on the newer snapshot %s", key, bucket, named)
                return 0
            logger.warning(
                "%s of %s named snapshot %s, which is missing or incomplete; it names %s now",
                key,
                bucket,
                named,
                doc["snapshot_id"],
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


def _settled(store: ObjectStore, bucket: str) -> bool:
    """The bucket's last writer finished: no run holds its lease, none died or failed
    half way (then `tree/` may hold files of a snapshot that was never committed)."""
    lease = inspect(store, bucket)
    return lease is None or lease.state == FREE


def _matches(
    latest: dict | None, refs: dict[str, str], default_branch: str | None
) -> TypeGuard[dict]:
    """The remote is what the latest snapshot holds: same branches and tags, same HEAD branch
    (a server that does not advertise HEAD's branch is judged on its refs)."""
    return (
        latest is not None
        and refs == latest["refs"]
        and default_branch in (None, latest["default_branch"])
    )


def _already_held(latest: dict, prepared: Prepared, repair: bool) -> bool:
    """The latest snapshot was taken after this clone (ids start with the clone's time), or
    holds exactly its refs: writing it would move the vault backwards or repeat a snapshot.
    A run that must repair `tree/` writes its snapshot anyway, unless a newer one exists."""
    assert prepared.snapshot_id is not None
    newer = _stamp(latest["snapshot_id"]) > _stamp(prepared.snapshot_id) or (
        _stamp(latest["snapshot_id"]) == _stamp(prepared.snapshot_id)
        and latest["snapshot_id"] != prepared.snapshot_id
    )
    same = (
        latest["snapshot_id"] != prepared.snapshot_id
        and latest["refs"] == prepared.refs
        and latest["default_branch"] == prepared.default_branch
    )
    return newer or (same and not repair)


def _in_place(
    entry: TreeEntry, before: dict | None, stored: ObjectInfo | None, index_written: float
) -> bool:
    """The object at the entry's key holds its blob: the previous snapshot's `tree.json`
    recorded this blob and mode with the etag the store lists now, and the object was not
    written after that `tree.json` (a run that died since may have rewritten it; an etag
    covers the content, this covers the metadata, e.g. a mode-only change)."""
    return (
        before is not None
        and stored is not None
        and before.get("sha") == entry.sha
        and before.get("mode") == entry.mode
        and bool(before.get("etag"))
        and before.get("etag") == stored.etag
        and int(stored.modified) <= int(index_written)
    )


def discard(prepared: Prepared) -> None:
    """Remove a prepared clone (and its wiki's) from local disk."""
    if prepared.work_dir is not None:
        remove_work_dir(prepared.work_dir)
    if prepared.wiki is not None:
        discard(prepared.wiki)


@dataclass(frozen=True)
class Listed:
    """One repository bucket as `repovault list` shows it: its latest complete manifest (None
    when a damaged pointer is all there is) and the pointer's damage, if any."""

    bucket: str
    repo_id: str | None
    manifest: dict | None
    damage: str | None


def list_vault(store: ObjectStore, prefix: str) -> Iterator[Listed]:
    """Every repository bucket that holds a complete snapshot or a damaged `latest.json`;
    buckets with nothing committed (a first run that died) are skipped."""
    for bucket in store.list_buckets(prefix):
        pointer = SnapshotReader(store, bucket).pointer()
        manifest = pointer.manifest
        if manifest is not None or pointer.damage:
            repo_id = manifest["repo_id"] if manifest else pointer.repo_id
            yield Listed(bucket, repo_id, manifest, pointer.damage)


def archived_repositories(store: ObjectStore, prefix: str) -> Iterator[dict]:
    """The latest complete manifest of every repository bucket (the newest complete one when
    `latest.json` is damaged, its `warning` then saying so); half-written ones are skipped."""
    for listed in list_vault(store, prefix):
        if listed.manifest is not None:
            yield {**listed.manifest, "bucket": listed.bucket, "warning": listed.damage}
