"""The `restorable` check: prove that a stored snapshot restores and matches its manifest, in one
of three passes.

The deep pass (`repovault verify --deep`, the restore drill, a check asked for over the API)
takes the same steps as a restore (`core.restore`: bundle size and sha256, `git bundle verify`,
every ref and HEAD) into a bare repository that is then checked with `git fsck --full` (damage
fails; objects in a legacy format the source itself serves are counted, not failed), and hashes
a sample of the LFS objects against their oid.

The quick pass (`repovault verify`) downloads nothing: each bundle of the snapshot's chain is
listed and must be stored with the size and ETag its manifest records (the store's answer to the
run's upload of the bytes whose sha256 the manifest holds, after the run's `git bundle verify`
of them; S3 gives a rewritten object another ETag, so an equal one is the object as written).
A manifest written before ETags were recorded has nothing to compare: its bundle gets the deep
pass's checks. What a listing can show, both passes check: for the latest snapshot, `tree/`
against its `tree.json` (key, ETag and size, one request per 1,000 objects), every LFS object
the snapshot lists stored with its size, and none missing (a snapshot whose history points to
LFS objects the server did not have is partial: `lfs_missing`).

The run pass (every archive run) is the quick pass over what that run wrote: the chain's
bundles, `lfs.json` and its objects as above, and of `tree/` only the objects the snapshot
changed (a HEAD each, a sample above `WRITTEN_CHECKS`), not a listing of all of it: listing
`tree/` cost more than the archive itself for a repository of 10,000 files. What earlier runs
wrote was proven when they wrote it; a hand edit since is found by the drill or `repovault
verify`. Each failure has its own reason word, so an auditor's dashboard can count them.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repovault_pipeline.core.common.errors import ArchiveError, TransientError
from repovault_pipeline.core.common.identity import RepoRef, bucket_name
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault import crypt, lfs
from repovault_pipeline.core.vault.gitops import GitClient
from repovault_pipeline.core.vault.lease import inspect
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.rebuild import (
    RestoreError,
    broken_link,
    chain_links,
    check_refs_and_head,
    fetch_snapshot,
)
from repovault_pipeline.core.vault.records import LfsIndex, Manifest, TreeFile, TreeIndex
from repovault_pipeline.core.vault.restore import repair_advice
from repovault_pipeline.core.vault.store import ObjectInfo, ObjectStore
from repovault_pipeline.core.vault.treekeys import TREE, tree_key

# Every listed LFS object must be stored with its size; the deep pass downloads and hashes this
# many of them (LFS objects are often large), a sample that changes from snapshot to snapshot.
LFS_CONTENT_CHECKS = 20
QUICK, DEEP, RUN = "quick", "deep", "run"
# The run pass HEADs at most this many of the `tree/` objects the snapshot changed: a usual
# commit's in full, a sample that changes from snapshot to snapshot above it (each HEAD costs
# ~6 ms against moto's server: 256 of them made the check of a first archive 1.3-1.7 s);
# this many at once.
WRITTEN_CHECKS = 32
STATS_AT_ONCE = 8
NOT_DECRYPTABLE = "not_decryptable"
SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{12}")


@dataclass
class Verdict:
    """What the check found: `ok`, else `reason` (one word) and `detail` (one line)."""

    repo_id: str
    bucket: str
    snapshot_id: str | None
    ok: bool
    # Which pass ran: QUICK (listings), RUN (what the run wrote) or DEEP (download, rebuild, fsck)
    depth: str = QUICK
    reason: str | None = None
    detail: str = ""
    # Not proven either way (an encrypted snapshot and no identity that opens it): not ok, and
    # not damage either; the `restorable` check reports it as a warning.
    unverified: bool = False
    refs: int = 0
    bundle_bytes: int = 0
    # The bundle was downloaded, hashed and rebuilt (the deep pass, or a quick pass over a
    # manifest that records no ETag); else it was listed with its manifest's size and ETag.
    bundle_rebuilt: bool = False
    tree_entries: int = 0
    tree_checked: int = 0
    tree_note: str | None = None
    lfs_objects: int = 0
    lfs_hashed: int = 0
    # Objects git fsck reports in a legacy format the source itself serves (message id ->
    # count): a faithful copy, not damage.
    fsck_legacy: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    checked_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        """One line for the CLI and logs: what was proven, and by which pass."""
        if not self.ok:
            snapshot = self.snapshot_id or "-"
            return f"{self.repo_id} snapshot {snapshot}: {self.reason}: {self.detail}"
        tree = (
            f"{self.tree_checked} of {self.tree_entries} tree/ objects checked"
            if self.tree_note is None
            else self.tree_note
        )
        hashed = f", {self.lfs_hashed} hashed" if self.lfs_hashed else ""
        objects = f"; {self.lfs_objects} LFS objects stored{hashed}" if self.lfs_objects else ""
        if not self.bundle_rebuilt:
            return (
                f"{self.repo_id} snapshot {self.snapshot_id} is stored as written ({self.depth} "
                f"pass: nothing downloaded, `--deep` rebuilds it): the bundle's "
                f"{self.bundle_bytes} bytes and ETag as its manifest records, {self.refs} refs; "
                f"{tree}{objects}"
            )
        fsck = (
            "git fsck finds no damage (legacy formatting the source carries: "
            + ", ".join(f"{msg_id} in {n}" for msg_id, n in sorted(self.fsck_legacy.items()))
            + ")"
            if self.fsck_legacy
            else "git fsck clean"
        )
        return (
            f"{self.repo_id} snapshot {self.snapshot_id} restores ({self.depth} pass): "
            f"{self.refs} refs and HEAD match, {self.bundle_bytes} bundle bytes, {fsck}; "
            f"{tree}{objects}"
        )


def verify(
    settings: Settings,
    store: ObjectStore,
    ref: RepoRef,
    snapshot_id: str | None = None,
    *,
    depth: str = QUICK,
) -> Verdict:
    """Check one snapshot (default: the one `latest.json` points at) by the pass `depth`
    names. Failures of the vault are returned as a verdict; a store that cannot be reached
    raises (that proves nothing)."""
    started = time.monotonic()
    bucket = bucket_name(ref.repo_id, settings.bucket_prefix)
    reader = SnapshotReader(store, bucket)
    latest_id = reader.latest_id()
    wanted = snapshot_id or latest_id
    deep = depth == DEEP
    verdict = Verdict(ref.repo_id, bucket, wanted, ok=False, depth=depth)
    manifest: Manifest | None = None
    try:
        manifest = _wanted_manifest(reader, ref, wanted, snapshot_id)
        links = chain_links(reader, manifest)
        if deep or any(link.bundle.etag is None for link in links):
            _check_git(settings, store, bucket, manifest, verdict)
        else:
            _check_stored(store, bucket, links)
        verdict.refs, verdict.bundle_bytes = len(manifest.refs), manifest.bundle.size
        lfs_index = reader.lfs_index(manifest.snapshot_id)
        identity = settings.decrypt_identity if deep else None
        _check_lfs(store, reader.bucket, manifest, lfs_index, verdict, identity, hashed=deep)
        tree_index = manifest.tree.index if manifest.tree else None
        if tree_index is None and crypt.Sealing.of(manifest):
            verdict.tree_note = "tree/ not checked: an encrypted snapshot writes none"
        elif wanted == latest_id and depth == RUN:
            _check_written(store, reader, manifest, verdict)
        elif wanted == latest_id:
            _check_tree(store, reader, manifest, verdict)
        else:
            verdict.tree_note = "tree/ not checked: it mirrors the latest snapshot, not this one"
        _check_lfs_complete(manifest, lfs_index)
        verdict.ok = True
    except crypt.NotDecryptable as exc:
        verdict.reason, verdict.unverified = NOT_DECRYPTABLE, True
        verdict.detail = (
            f"{exc}; not verified: the stored bundle matches its manifest's size and sha256"
        )
    except RestoreError as exc:
        verdict.reason, verdict.detail = exc.reason, str(exc)
        if wanted is not None and exc.reason != "no_snapshot":
            url = manifest.repo_url if manifest else ref.url
            verdict.detail += f"; {repair_advice(reader, wanted, url)}"
    verdict.duration_s = round(time.monotonic() - started, 3)
    return verdict


def _wanted_manifest(
    reader: SnapshotReader[Manifest], ref: RepoRef, wanted: str | None, snapshot_id: str | None
) -> Manifest:
    """The manifest of the snapshot to check (`snapshot_id`, else the one `latest.json`
    names: `wanted`); a RestoreError says why there is none."""
    if wanted is None:
        raise RestoreError(f"no snapshot of {ref.repo_id} is stored", "no_snapshot")
    if not SNAPSHOT_ID.fullmatch(wanted):
        if snapshot_id is None:  # the pointer itself is damaged
            raise RestoreError(
                f"latest.json holds {wanted[:80]!r}, which is not a snapshot id",
                "manifest_missing",
            )
        raise RestoreError(
            f"{wanted[:80]!r} is not a snapshot id (yyyymmddTHHMMSSZ-<12 hex>); "
            "`repovault list` shows the latest",
            "no_snapshot",
        )
    manifest = reader.manifest(wanted)
    if manifest is None:
        where = "latest.json points at" if snapshot_id is None else "asked for"
        newest = reader.latest() if snapshot_id is None else None  # what restore uses
        raise RestoreError(
            f"snapshot {wanted} ({where}) has no manifest.json"
            + (
                f"; restore uses the newest complete snapshot {newest.snapshot_id} and "
                "the next run repairs the pointer"
                if newest
                else ""
            ),
            "manifest_missing",
        )
    return manifest


def _check_git(
    settings: Settings, store: ObjectStore, bucket: str, manifest: Manifest, verdict: Verdict
) -> None:
    """Rebuild a bare repository from the bundle, check refs and HEAD, then `git fsck`."""
    client = GitClient(settings)
    with tempfile.TemporaryDirectory(prefix="repovault-verify-") as tmp:
        path = Path(tmp) / "repo.git"
        client.run(["init", "--quiet", "--bare", "--template=", str(path)])
        repo = LocalRepo(path, client)
        fetch_snapshot(SnapshotReader(store, bucket), manifest, repo, settings.decrypt_identity)
        check_refs_and_head(repo, manifest)
        report = repo.fsck()
        if report.damage:
            more = len(report.damage) - 1
            raise RestoreError(
                f"git fsck of snapshot {manifest.snapshot_id} found damage: "
                f"{report.damage[0]}" + (f" (and {more} more lines)" if more else ""),
                "fsck_failed",
            )
        verdict.fsck_legacy = report.legacy
    verdict.bundle_rebuilt = True


def _check_stored(store: ObjectStore, bucket: str, links: list[Manifest]) -> None:
    """The quick pass over the bundles of a snapshot's chain (`chain_links`): each is listed
    under its key with the size and ETag its manifest records (one listing request each,
    nothing downloaded). A bad link of the chain fails `chain_broken`, naming it and its
    dependant."""
    for n, link in enumerate(links):
        try:
            _check_listed(store, bucket, link)
        except RestoreError as exc:
            if link is links[-1]:
                raise
            raise broken_link(links, n, exc) from None


def _check_listed(store: ObjectStore, bucket: str, manifest: Manifest) -> None:
    """One snapshot's bundle is listed with the size and ETag its manifest records."""
    snapshot, bundle = manifest.snapshot_id, manifest.bundle
    key = bundle.key
    info = next((i for i in store.list(bucket, key) if i.key == key), None)
    if info is None:
        raise RestoreError(
            f"{key} of snapshot {snapshot} is missing from the store", "bundle_unreadable"
        )
    if info.size != bundle.size:
        raise RestoreError(
            f"{key} of snapshot {snapshot} is {info.size} bytes but its manifest says "
            f"{bundle.size}: the upload was cut short or the object was replaced",
            "bundle_size_mismatch",
        )
    if info.etag != bundle.etag:
        raise RestoreError(
            f"{key} of snapshot {snapshot} has ETag {info.etag} but its manifest records "
            f"{bundle.etag}: the object was replaced after the run wrote it",
            "bundle_tampered",
        )


def _check_tree(
    store: ObjectStore, reader: SnapshotReader[Manifest], manifest: Manifest, verdict: Verdict
) -> None:
    """`tree/` holds every object `tree.json` names, with its ETag and size, and nothing else:
    one listing (a request per 1,000 objects) compared both ways, whatever the tree's size."""
    wanted = _tree_to_check(store, reader, manifest, verdict)
    if wanted is None:
        return
    snapshot = manifest.snapshot_id
    listed = {info.key: info for info in store.list(reader.bucket, TREE)}
    extra = sorted(set(listed) - set(wanted))
    if extra:
        raise RestoreError(
            f"tree/ holds {len(extra)} objects tree.json of snapshot {snapshot} does not "
            f"name (first: {extra[0]!r})",
            "tree_mismatch",
        )
    for key in sorted(wanted):
        _compare(key, wanted[key], listed.get(key), snapshot)
    verdict.tree_checked = len(wanted)


def _check_written(
    store: ObjectStore, reader: SnapshotReader[Manifest], manifest: Manifest, verdict: Verdict
) -> None:
    """The `tree/` objects the snapshot changed (its `tree.json` entries that differ from the
    previous snapshot's; all of them for a first one) are stored with the ETag and size it
    records: a HEAD each, `WRITTEN_CHECKS` at most (a sample that changes from snapshot to
    snapshot above it)."""
    wanted = _tree_to_check(store, reader, manifest, verdict)
    if wanted is None:
        return
    snapshot = manifest.snapshot_id
    complete, _ = reader.snapshot_ids()
    previous = next((s for s in complete if s < snapshot), None)
    before = _expected_keys(reader.tree_index(previous)) if previous else {}
    written = [key for key, meta in wanted.items() if before.get(key) != meta]
    sample = sorted(written, key=lambda key: _rank(snapshot, key))[:WRITTEN_CHECKS]
    with ThreadPoolExecutor(STATS_AT_ONCE) as pool:
        stored = list(pool.map(lambda key: store.stat(reader.bucket, key), sample))
    for key, info in zip(sample, stored, strict=True):
        _compare(key, wanted[key], info, snapshot)
    verdict.tree_checked = len(sample)
    verdict.tree_note = (
        f"{len(sample)} of the {len(written)} tree/ objects this snapshot changed checked "
        f"({len(wanted)} in tree.json; all of tree/ by `repovault verify` and the drill)"
    )


def _tree_to_check(
    store: ObjectStore, reader: SnapshotReader[Manifest], manifest: Manifest, verdict: Verdict
) -> dict[str, TreeFile] | None:
    """`tree.json`'s entries by key, once it names as many files as the manifest says; None
    while a live run holds the bucket: `tree/` is then mid-update (a run that died half way
    is not skipped: its leftovers are a real mismatch until repaired)."""
    lease = inspect(store, reader.bucket)
    if lease is not None and lease.live:
        verdict.tree_note = "tree/ not checked: a run is writing this bucket now"
        return None
    snapshot = manifest.snapshot_id
    index = reader.tree_index(snapshot)
    files = manifest.tree.files if manifest.tree else 0
    if len(index.files) != files:
        raise RestoreError(
            f"tree.json of snapshot {snapshot} names {len(index.files)} files but the manifest "
            f"says {files}",
            "tree_mismatch",
        )
    wanted = _expected_keys(index)
    verdict.tree_entries = len(wanted)
    return wanted


def _check_lfs(
    store: ObjectStore,
    bucket: str,
    manifest: Manifest,
    index: LfsIndex,
    verdict: Verdict,
    identity: Path | None,
    hashed: bool,
) -> None:
    """Every object of the snapshot's `lfs.json` is under `lfs/<oid>` with its size (an
    encrypted copy: under its key); when `hashed` (the deep pass), a sample is downloaded
    (decrypted) and hashed, as a restore would (`lfs.restore`)."""
    snapshot = manifest.snapshot_id
    objects = index.objects
    if not objects:
        return
    sealed = crypt.Sealing.of(index)
    keys = lfs.index_keys(index)
    listed = {info.key: info for info in store.list(bucket, lfs.LFS_PREFIX)}
    for oid, size in sorted(objects.items()):
        info = listed.get(keys[oid])
        if info is None:
            raise RestoreError(
                f"LFS object {oid[:12]} of snapshot {snapshot} is missing from the store",
                "lfs_missing_object",
            )
        if sealed is None and info.size != size:
            raise RestoreError(
                f"LFS object {oid[:12]} is {info.size} bytes but lfs.json of snapshot "
                f"{snapshot} says {size}",
                "lfs_tampered",
            )
    verdict.lfs_objects = len(objects)
    if not hashed:
        return
    sample = sorted(objects, key=lambda oid: _rank(snapshot, oid))[:LFS_CONTENT_CHECKS]
    with tempfile.TemporaryDirectory(prefix="repovault-verify-lfs-") as tmp:
        try:
            some = index.model_copy(update={"objects": {o: objects[o] for o in sample}})
            what = f"snapshot {snapshot} of {manifest.repo_id}"
            lfs.restore(store, bucket, some, Path(tmp), identity, what)
        except (TransientError, crypt.NotDecryptable):
            raise
        except ArchiveError as exc:
            raise RestoreError(f"snapshot {snapshot}: {exc}", "lfs_tampered") from None
    verdict.lfs_hashed = len(sample)


def _check_lfs_complete(manifest: Manifest, index: LfsIndex) -> None:
    """A snapshot whose history points to LFS objects the server did not have (`missing` in its
    `lfs.json`) is partial: its restore leaves those files as pointers, so it fails."""
    snapshot = manifest.snapshot_id
    if index.missing:
        paths = sorted({p for names in index.missing_paths.values() for p in names})
        raise RestoreError(
            f"snapshot {snapshot} is partial: {lfs.missing_detail(len(index.missing), paths)}",
            "lfs_missing",
        )


def _rank(snapshot: str, key: str) -> bytes:
    """Sample order: fixed for one snapshot (a re-run checks the same objects), different for
    the next one (over time every object is checked)."""
    return hashlib.sha256(f"{snapshot}\0{key}".encode()).digest()


def _expected_keys(index: TreeIndex) -> dict[str, TreeFile]:
    """tree.json's entries by object key."""
    return {meta.key or tree_key(path): meta for path, meta in index.files.items()}


def _compare(key: str, meta: TreeFile, info: ObjectInfo | None, snapshot: str) -> None:
    if info is None:
        raise RestoreError(
            f"{key!r}, named by tree.json of snapshot {snapshot}, is missing from the store",
            "tree_missing_object",
        )
    if info.size != meta.size or (meta.etag and info.etag != meta.etag):
        raise RestoreError(
            f"{key!r} is {info.size} bytes with ETag {info.etag} but tree.json of snapshot "
            f"{snapshot} says {meta.size} bytes with ETag {meta.etag}",
            "tree_mismatch",
        )


DRILL_DAYS = 7


def drill_batch(repo_ids: list[str], day: int) -> list[str]:
    """The repositories the restore drill checks on `day` (days since the epoch): each one
    falls on one day of the week by a hash of its `repo_id`, so a week checks them all in
    seven batches of about the same size, and a new repository joins the cycle at once."""
    return sorted(
        repo_id
        for repo_id in repo_ids
        if int.from_bytes(hashlib.sha256(repo_id.encode()).digest()[:4]) % DRILL_DAYS
        == day % DRILL_DAYS
    )
