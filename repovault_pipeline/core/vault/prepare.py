"""The first half of an archive run, outside the bucket's lease: clone the repository (and
its wiki), bundle it, fetch its LFS objects (`Prepared`), unless the latest snapshot already
holds what the remote has and still restores."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from repovault_pipeline.core.common.errors import ArchiveError, RepoNotFound
from repovault_pipeline.core.common.identity import RepoRef, bucket_name, wiki_ref
from repovault_pipeline.core.common.redact import mask_secrets
from repovault_pipeline.core.common.settings import Keep, Settings
from repovault_pipeline.core.vault import crypt, lfs
from repovault_pipeline.core.vault.chain import BrokenChain, chain_damage, chain_of
from repovault_pipeline.core.vault.gitops import GitClient, RemoteState
from repovault_pipeline.core.vault.latest import Pointer
from repovault_pipeline.core.vault.layout import (
    BUNDLE,
    CODE,
    WIKI,
    Layout,
    new_snapshot_id,
    stamp,
)
from repovault_pipeline.core.vault.lease import FREE, inspect
from repovault_pipeline.core.vault.lfs import LfsObjects
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.mirror import Mirrors
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import LfsSummary, Manifest
from repovault_pipeline.core.vault.seed import SeedFailed, seed
from repovault_pipeline.core.vault.store import ObjectStore
from repovault_pipeline.core.vault.tree_sync import tree_drift
from repovault_pipeline.core.vault.workdir import make_work_dir, remove_work_dir, sweep_orphans


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
    layout: Layout[Manifest] = CODE
    wiki: Prepared | None = None  # the wiki's clone; None: no wiki (or not kept)
    wiki_found: bool = False  # the remote has a wiki
    # latest.json names a missing or incomplete snapshot: an unchanged run still repairs it.
    pointer_damage: str | None = None
    # Why this run writes a fresh snapshot although the remote's refs equal the latest one's
    # (a forced request, a latest snapshot that does not restore); None: only if they moved.
    fresh: str | None = None
    wiki_error: str | None = None  # why the wiki could not be cloned (the code still is kept)
    held_lfs: LfsSummary | None = None  # unchanged: the `lfs` of the snapshot that holds it
    base: str | None = None  # the snapshot the bundle builds on (incremental); None: full

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


def discard(prepared: Prepared) -> None:
    """Remove a prepared clone (and its wiki's) from local disk."""
    if prepared.work_dir is not None:
        remove_work_dir(prepared.work_dir)
    if prepared.wiki is not None:
        discard(prepared.wiki)


def matches(latest: Manifest | None, refs: dict[str, str], default_branch: str | None) -> bool:
    """The remote is what the latest snapshot holds: same branches and tags, same HEAD branch
    (a server that does not advertise HEAD's branch is judged on its refs)."""
    return (
        latest is not None
        and refs == latest.refs
        and default_branch in (None, latest.default_branch)
    )


def already_held(latest: Manifest, prepared: Prepared, repair: bool) -> bool:
    """The latest snapshot was taken after this clone (ids start with the clone's time), or
    holds exactly its refs: writing it would move the vault backwards or repeat a snapshot.
    A run that must repair `tree/` writes its snapshot anyway, unless a newer one exists."""
    assert prepared.snapshot_id is not None
    newer = stamp(latest.snapshot_id) > stamp(prepared.snapshot_id) or (
        stamp(latest.snapshot_id) == stamp(prepared.snapshot_id)
        and latest.snapshot_id != prepared.snapshot_id
    )
    same = (
        latest.snapshot_id != prepared.snapshot_id
        and latest.refs == prepared.refs
        and latest.default_branch == prepared.default_branch
    )
    return newer or (same and not repair)


class Preparer:
    """Clones what an archive run writes; `SnapshotWriter` uploads it."""

    def __init__(
        self, settings: Settings, store: ObjectStore, logger: logging.Logger | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.log = logger or logging.getLogger(__name__)
        self.git = GitClient(settings, self.log)
        self.mirrors = (
            Mirrors(self.git, settings.mirror_dir, settings.mirror_max_idle_d)
            if settings.mirror_dir
            else None
        )
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
        if self.mirrors is not None:
            self.mirrors.sweep()
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
        layout: Layout[Manifest],
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
        # Only `tree/` can need a repair after a run that died: a wiki has none. Settled: the
        # bucket's last writer finished (no run holds the lease, none died or failed half
        # way, leaving files of a snapshot never committed); quiet: `tree.json` says what
        # `tree/` holds (`LeaseView.quiet`).
        lease = inspect(self.store, bucket) if latest is not None and layout.tree else None
        settled = lease is None or lease.state == FREE
        quiet = lease is None or lease.quiet
        if (
            fresh is None
            and settled
            and latest is not None
            and matches(latest, remote.refs, remote.default_branch)
        ):
            fresh = self._fresh(bucket, layout, latest, damaged or {}, quiet)
            if fresh is None:
                self.log.info("%s unchanged since snapshot %s", ref.url, latest.snapshot_id)
                return self._unchanged(ref, bucket, pointer, started, keep, layout)
        if fresh is not None and latest is not None:
            self.log.warning(
                "%s: writing a fresh snapshot after %s: %s", ref.url, latest.snapshot_id, fresh
            )
        check = settled and fresh is None
        base = self._base(bucket, layout, latest, fresh, damaged or {})
        return self._clone(
            ref, bucket, layout, pointer, remote, work_dir, keep, started, fresh, check, base
        )

    def _base(
        self,
        bucket: str,
        layout: Layout[Manifest],
        latest: Manifest | None,
        fresh: str | None,
        damaged: Mapping[str, str],
    ) -> Manifest | None:
        """The snapshot this run's bundle may build on (docs/storage.md, "Incremental
        bundles"): the latest one, when REPOVAULT_CHAIN_MAX allows another link, the run writes
        no fresh snapshot, the chain is sealed as this run seals, is whole as far as one
        listing of its bundles tells, none of it was found damaged, and its full bundle stays
        among the REPOVAULT_KEEP_SNAPSHOTS newest once this snapshot is added (else the next
        retention would keep a chain only for its dependants). None: a full bundle."""
        chain_max, keep = self.settings.chain_max, self.settings.keep_snapshots
        if not chain_max or layout is not CODE or latest is None or fresh is not None:
            return None
        if crypt.Sealing.of(latest) != self.sealing:
            return None
        reader = SnapshotReader(self.store, bucket)
        try:
            links = chain_of(reader, latest)
        except BrokenChain as exc:
            self.log.warning("%s: a full bundle, the latest chain is broken: %s", bucket, exc)
            return None
        why = None
        if len(links) > chain_max:
            why = f"REPOVAULT_CHAIN_MAX={chain_max} incremental bundles follow the full one"
        elif links[0].snapshot_id not in reader.snapshot_ids()[0][: keep - 1]:
            why = "the next retention would leave the chain's full bundle behind"
        elif known := next(
            (damaged[s.snapshot_id] for s in links if s.snapshot_id in damaged), None
        ):
            why = f"the chain was found damaged ({known})"
        elif damage := chain_damage(reader, links):
            why = damage
        if why is not None:
            self.log.info("%s: this snapshot stores a full bundle: %s", bucket, why)
            return None
        return latest

    def _bundle(self, repo: LocalRepo, dest: Path, base: Manifest | None) -> str | None:
        """Bundle the clone: incremental on `base` (only the objects its ref tips do not
        reach; the tips this clone lacks, rewritten or deleted upstream, are left out), else
        full. Returns the base the bundle builds on, None for a full one (also when the clone
        holds none of the base's tips, or nothing is new: git writes no empty bundle)."""
        if base is not None:
            tips = set(base.refs.values())
            tips -= repo.missing(tips)
            if tips:
                try:
                    repo.create_bundle(dest, exclude=tips)
                    return base.snapshot_id
                except ArchiveError as exc:
                    self.log.info(
                        "no incremental bundle on %s (%s): a full one", base.snapshot_id, exc
                    )
        repo.create_bundle(dest)
        return None

    def _clone(
        self,
        ref: RepoRef,
        bucket: str,
        layout: Layout[Manifest],
        pointer: Pointer[Manifest],
        remote: RemoteState,
        work_dir: Path | None,
        keep: Keep,
        started: float,
        fresh: str | None,
        check: bool,
        base: Manifest | None,
    ) -> Prepared:
        """Clone (or copy the mirror, fetched: REPOVAULT_MIRROR_DIR; else seed from the latest
        snapshot and fetch) and bundle; `check`:
        unchanged after all when the clone's refs and HEAD branch are the latest snapshot's (a
        remote that did not advertise its HEAD)."""
        latest = pointer.manifest
        label = f"{bucket}-wiki" if layout is WIKI else bucket
        work_dir = make_work_dir(self.settings.work_dir, label, work_dir)
        try:
            dest = work_dir / "repo.git"
            if self.mirrors is not None:
                repo = self.mirrors.copy(ref, label, remote, dest)
            else:
                repo = self._seeded(ref, bucket, layout, latest, remote, dest, fresh)
            refs = repo.refs()
            head = repo.head()
            if check and latest is not None and matches(latest, refs, head.branch):
                remove_work_dir(work_dir)
                return self._unchanged(ref, bucket, pointer, started, keep, layout)
            clone_done = time.time()
            self.log.info(
                "cloned %s: %d refs, HEAD %s (%s)",
                ref.repo_id,
                len(refs),
                head.commit[:12],
                head.ref,
            )
            snapshot_id = new_snapshot_id(head.commit, latest.snapshot_id if latest else None)
            base_id = self._bundle(repo, work_dir / BUNDLE, base)
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
            base=base_id,
        )

    def _seeded(
        self,
        ref: RepoRef,
        bucket: str,
        layout: Layout[Manifest],
        latest: Manifest | None,
        remote: RemoteState,
        dest: Path,
        fresh: str | None,
    ) -> LocalRepo:
        """The clone seeded from the latest snapshot, then fetched (core/vault/seed.py); a
        plain clone when there is none, the run writes a `fresh` snapshot (forced, or the
        latest found damaged), it is encrypted and this archiver holds no identity, or the
        seed fails (said in one line)."""
        if latest is None or fresh is not None:
            return self.git.clone(ref, dest)
        identity = self.settings.decrypt_identity
        if identity is None and crypt.Sealing.of(latest) is not None:
            self.log.info("%s: encrypted snapshots and no REPOVAULT_DECRYPT_IDENTITY", ref.url)
            return self.git.clone(ref, dest)
        reader = SnapshotReader(self.store, bucket, layout)
        try:
            return seed(self.git, reader, latest, ref, remote, dest, identity)
        except SeedFailed as exc:
            self.log.warning("%s: %s; cloning afresh", ref.url, exc)
        return self.git.clone(ref, dest)

    def _fresh(
        self,
        bucket: str,
        layout: Layout[Manifest],
        latest: Manifest,
        damaged: Mapping[str, str],
        quiet: bool,
    ) -> str | None:
        """Why the latest snapshot, which holds what the remote has, must be written again:
        a check found it damaged, its bundle looks damaged, it is sealed to other recipients,
        or `tree/` drifted from it (looked at only when the bucket is not `quiet`: a hand
        edit of a quiet one is the `restorable` check's to find). None: it stands."""
        if known := damaged.get(latest.snapshot_id):
            return known
        if damage := self._damage(bucket, latest):
            return damage
        if resealed := self._resealed(latest):
            return resealed
        if not layout.tree or quiet:
            return None
        index = SnapshotReader(self.store, bucket).tree_index(latest.snapshot_id)
        return tree_drift(self.store, bucket, latest.snapshot_id, index)

    def _damage(self, bucket: str, latest: Manifest) -> str | None:
        """What one listing tells of the latest snapshot's bundle and its chain's (the objects
        a restore needs first): missing, or not the size its manifest records, a base gone.
        None: they look whole."""
        reader = SnapshotReader(self.store, bucket)
        try:
            return chain_damage(reader, chain_of(reader, latest))
        except BrokenChain as exc:
            return str(exc)

    def _resealed(self, latest: Manifest) -> str | None:
        """Why the latest snapshot must be written again although nothing changed: it is not
        encrypted to REPOVAULT_ENCRYPT_RECIPIENTS (encryption switched on, off, or to other
        keys; switched on, the fresh snapshot also removes the plaintext `tree/`)."""
        if crypt.Sealing.of(latest) == self.sealing:
            return None
        if self.sealing is None:
            return "REPOVAULT_ENCRYPT_RECIPIENTS is unset but the latest snapshot is encrypted"
        return "the latest snapshot is not encrypted to REPOVAULT_ENCRYPT_RECIPIENTS"

    def _unchanged(
        self,
        ref: RepoRef,
        bucket: str,
        pointer: Pointer[Manifest],
        started: float,
        keep: Keep,
        layout: Layout[Manifest],
    ) -> Prepared:
        latest = pointer.manifest
        assert latest is not None
        return Prepared(
            repo_id=ref.repo_id,
            repo_url=mask_secrets(ref.url),
            bucket=bucket,
            head_commit=latest.head_commit,
            default_branch=latest.default_branch,
            refs=latest.refs,
            snapshot_id=latest.snapshot_id,
            head_ref=latest.head_ref,
            started_at=started,
            clone_s=time.time() - started,
            keep=keep,
            layout=layout,
            pointer_damage=pointer.damage,
            held_lfs=latest.lfs if keep.lfs and layout is CODE else None,
        )
