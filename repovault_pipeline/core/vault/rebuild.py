"""A snapshot's objects and refs into a new repository, checked against its manifest: its
bundle, or, for an incremental snapshot, its chain's bundles from the full one on. What a
restore, `repovault verify --deep`, a push to a forge and a run seeded from the vault share.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    TransientError,
    WorkDirFull,
)
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.chain import BrokenChain, chain_of
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest
from repovault_pipeline.core.vault.store import ObjectStore, file_sha256

CHAIN_DOWNLOADS = 4  # a chain's bundles downloaded at once


class RestoreError(ArchiveError):
    """The snapshot cannot be restored or does not match its manifest. `reason` names the
    failure in a word (`bundle_tampered`, `refs_disagree`...) for checks and dashboards."""

    def __init__(self, message: str, reason: str = "unrestorable") -> None:
        super().__init__(message)
        self.reason = reason


def sealed_what(manifest: Manifest) -> str:
    """How errors about an encrypted snapshot name it."""
    return f"snapshot {manifest.snapshot_id} of {manifest.repo_id}"


def fetch_snapshot(
    reader: SnapshotReader[Manifest],
    manifest: Manifest,
    repo: LocalRepo,
    identity: Path | None = None,
) -> None:
    """The snapshot's objects and refs into `repo` (a new, empty repository): its bundle, or,
    for an incremental one (`base`), its chain's bundles from the full one on, each checked
    against its own manifest and unbundled in order without refs; then exactly the manifest's
    refs are set and git checks that every object they reach is there. A link that is missing
    or does not match fails `chain_broken`, naming it."""
    if manifest.base is None:
        fetch_bundle(reader.store, reader.bucket, manifest, repo, identity)
        return
    links = chain_links(reader, manifest)
    with (
        tempfile.TemporaryDirectory(prefix="repovault-restore-") as tmp,
        ThreadPoolExecutor(CHAIN_DOWNLOADS) as pool,
    ):
        # Downloaded side by side (each link is a round trip or more), unbundled in order.
        bundles = [
            pool.submit(_downloaded, reader.store, reader.bucket, link, Path(tmp, str(n)), identity)
            for n, link in enumerate(links)
        ]
        n = 0
        try:
            for n, link in enumerate(links):
                _check_carried(_unbundle_link(repo, bundles[n].result(), link), link)
        except RestoreError as exc:
            for later in bundles:
                later.cancel()
            if n == len(links) - 1:
                raise
            raise broken_link(links, n, exc) from None
    _set_refs(repo, manifest)
    _check_connected(repo, manifest)


def chain_links(reader: SnapshotReader[Manifest], manifest: Manifest) -> list[Manifest]:
    """The manifests whose bundles rebuild the snapshot, its chain's full bundle first and the
    snapshot last (one for a full bundle); a base gone fails `chain_broken`."""
    try:
        return chain_of(reader, manifest)
    except BrokenChain as exc:
        raise RestoreError(str(exc), "chain_broken") from None


def broken_link(links: list[Manifest], n: int, exc: RestoreError) -> RestoreError:
    """The failure of link `n` (not the last) of a chain: `chain_broken`, naming the link, the
    snapshot building on it and the snapshot the chain rebuilds."""
    return RestoreError(
        f"snapshot {links[n].snapshot_id} (base of {links[n + 1].snapshot_id}) in the chain "
        f"of snapshot {links[-1].snapshot_id}: {exc}",
        "chain_broken",
    )


def _check_carried(carried: dict[str, str], link: Manifest) -> None:
    """The branches and tags a link's bundle carried are its manifest's, at its shas: all of
    them for a full bundle, those that moved for an incremental one."""
    if link.base is None:
        _check_refs(carried, link)
        return
    for name, sha in sorted(carried.items()):
        if link.refs.get(name) != sha:
            raise RestoreError(
                f"ref {name} is {_short(sha)} in the bundle of snapshot {link.snapshot_id} but "
                f"{_short(link.refs.get(name))} in its manifest",
                "refs_disagree",
            )


def _set_refs(repo: LocalRepo, manifest: Manifest) -> None:
    """Exactly the manifest's branches and tags, in one transaction. A ref whose object no
    link brought fails `chain_broken`."""
    lacking = repo.missing(set(manifest.refs.values()))
    if lacking:
        name = min(n for n, sha in manifest.refs.items() if sha in lacking)
        raise RestoreError(
            f"ref {name} of snapshot {manifest.snapshot_id} is {_short(manifest.refs[name])}, "
            f"which no bundle of its chain holds ({len(lacking)} ref tips missing)",
            "chain_broken",
        )
    commands = "".join(f"create {name} {sha}\n" for name, sha in sorted(manifest.refs.items()))
    repo.client.run(["update-ref", "--stdin"], cwd=repo.path, stdin=commands.encode())


def _check_connected(repo: LocalRepo, manifest: Manifest) -> None:
    """Every object the refs reach is in `repo`: the check `git fetch` makes of what it
    received, made once for the whole chain (its links were unbundled without refs)."""
    try:
        repo.git("rev-list", "--objects", "--quiet", "--all")
    except TransientError:
        raise
    except ArchiveError as exc:
        raise RestoreError(
            f"the chain of snapshot {manifest.snapshot_id} lacks objects its refs need: {exc}",
            "chain_broken",
        ) from None


def fetch_bundle(
    store: ObjectStore,
    bucket: str,
    manifest: Manifest,
    repo: LocalRepo,
    identity: Path | None = None,
) -> None:
    """Download the snapshot's bundle, check it byte for byte against the manifest (the stored
    ciphertext, when encrypted: then decrypted with `identity`, `crypt.NotDecryptable` when it
    cannot be), check it is a valid bundle, and fetch all its refs into `repo` (a new, empty
    repository)."""
    with tempfile.TemporaryDirectory(prefix="repovault-restore-") as tmp:
        bundle = _downloaded(store, bucket, manifest, Path(tmp), identity)
        _unbundle(repo, bundle, manifest)


def _downloaded(
    store: ObjectStore, bucket: str, manifest: Manifest, folder: Path, identity: Path | None
) -> Path:
    """The snapshot's bundle in `folder`, checked against its manifest and decrypted."""
    snapshot = manifest.snapshot_id
    key = manifest.bundle.key
    sealed = crypt.Sealing.of(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "repo.bundle"
    stored = bundle.with_name(bundle.name + crypt.AGE_SUFFIX) if sealed else bundle
    try:
        store.download(bucket, key, stored)
    except TransientError:
        raise
    except ArchiveError as exc:
        raise RestoreError(
            f"{key} of snapshot {snapshot} cannot be read: {exc}", "bundle_unreadable"
        ) from None
    _check_bundle(stored, manifest)
    if sealed is not None:
        try:
            crypt.decrypt_file(identity, sealed, sealed_what(manifest), stored, bundle)
        except crypt.DecryptFailed as exc:
            raise RestoreError(str(exc), "bundle_undecryptable") from None
        stored.unlink()
    return bundle


def _unbundle(repo: LocalRepo, bundle: Path, manifest: Manifest) -> None:
    """Fetch all the bundle's refs into `repo`; git checks the bundle as it fetches it, and
    what it received for connectivity."""
    # The bundle is a local file we downloaded and checked: allow the file transport here only.
    try:
        repo.client.run(
            [
                "fetch",
                "--quiet",
                "--update-head-ok",
                "--no-write-fetch-head",
                "--no-auto-maintenance",
                "--",
                str(bundle),
                "refs/*:refs/*",
            ],
            cwd=repo.path,
            protocols=("file",),
        )
    except (GitTimeout, WorkDirFull):
        raise
    except ArchiveError as exc:  # a local file: git's "early EOF" here is no network trouble
        raise _invalid(repo, bundle, manifest, exc) from None


def _unbundle_link(repo: LocalRepo, bundle: Path, link: Manifest) -> dict[str, str]:
    """A link's objects into `repo`, no ref written (`git bundle unbundle`: its base's
    commits must be there, brought by the links before it); the branches and tags it
    carries. One git command a link: `_check_connected` checks the whole chain after."""
    try:
        out = repo.git("bundle", "unbundle", str(bundle))
    except (GitTimeout, WorkDirFull):
        raise
    except ArchiveError as exc:  # a local file: git's "early EOF" here is no network trouble
        raise _invalid(repo, bundle, link, exc) from None
    pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: sha for sha, name in pairs if name.startswith(("refs/heads/", "refs/tags/"))}


def _invalid(repo: LocalRepo, bundle: Path, manifest: Manifest, exc: ArchiveError) -> RestoreError:
    """Why git could not take a bundle that matched its manifest: not a bundle at all (or
    lacking its base's commits), as `git bundle verify` says, or not unpackable."""
    key, snapshot = manifest.bundle.key, manifest.snapshot_id
    try:
        repo.git("bundle", "verify", "--quiet", str(bundle))
    except ArchiveError:
        return RestoreError(
            f"{key} of snapshot {snapshot} is not a valid git bundle although it matches "
            "its manifest's size and sha256"
            + (" (or lacks the commits of its base it builds on)" if manifest.base else ""),
            "bundle_invalid",
        )
    return RestoreError(f"{key} of snapshot {snapshot} cannot be unpacked: {exc}", "bundle_invalid")


def check_refs_and_head(repo: LocalRepo, manifest: Manifest) -> str:
    """Every ref of the manifest is in `repo` at its sha; point HEAD where the snapshot had it
    and return its commit, which must be the manifest's `head_commit`."""
    _check_refs(repo.refs(), manifest)
    if manifest.default_branch:
        repo.git("symbolic-ref", "HEAD", f"refs/heads/{manifest.default_branch}")
    else:  # no branch at HEAD (tags only, or a detached HEAD): HEAD is the snapshot's commit
        try:
            repo.git("update-ref", "--no-deref", "HEAD", manifest.head_commit)
        except ArchiveError:
            raise RestoreError(
                f"the bundle of snapshot {manifest.snapshot_id} lacks its manifest's HEAD "
                f"commit {manifest.head_commit[:12]}",
                "head_mismatch",
            ) from None
    try:
        head = repo.head_commit()
    except ArchiveError:
        head = ""
    if head != manifest.head_commit:
        raise RestoreError(
            f"HEAD of the restored clone is {_short(head or None)} but snapshot "
            f"{manifest.snapshot_id}'s manifest says {manifest.head_commit[:12]}",
            "head_mismatch",
        )
    return head


def _check_bundle(bundle: Path, manifest: Manifest) -> None:
    """The downloaded bundle is the one the manifest describes, byte for byte."""
    where = f"{manifest.bundle.key} of snapshot {manifest.snapshot_id}"
    size = bundle.stat().st_size
    if size != manifest.bundle.size:
        raise RestoreError(
            f"{where} is {size} bytes but its manifest says {manifest.bundle.size}: "
            "the download was cut short or the object was replaced",
            "bundle_size_mismatch",
        )
    if file_sha256(bundle) != manifest.bundle.sha256:
        raise RestoreError(
            f"{where} fails its sha256 check: the stored bundle is not the one archived",
            "bundle_tampered",
        )


def _check_refs(restored: dict[str, str], manifest: Manifest) -> None:
    """Every branch and tag of the manifest, at its sha, and no other."""
    expected = manifest.refs
    for name in sorted(set(restored) | set(expected)):
        have, want = restored.get(name), expected.get(name)
        if have != want:
            raise RestoreError(
                f"ref {name} is {_short(have)} in the restored bundle but {_short(want)} in the "
                f"manifest of snapshot {manifest.snapshot_id}",
                "refs_disagree",
            )


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "missing"
