"""A run's clone seeded from the vault (`seed`): when no kept mirror exists (REPOVAULT_MIRROR_DIR
unset), the latest snapshot's bundle chain is fetched from the store into a new bare repository,
then only what is new is fetched from the remote, as a mirror is (`mirror.fetch_remote`: pruned,
forced, HEAD set as a clone sets it). The repository then shows exactly what a fresh `git clone
--bare` shows: the same branches, tags and HEAD (objects no ref reaches any more may stay; no
bundle, listing or LFS fetch reads them).

Always on, no setting: the chain holds about the bytes a clone would download, the store is
usually nearer than the forge and does not rate-limit, and the forge serves only a small fetch
(its `have` lines name the snapshot's tips). On loopback both are fast; the seed costs one
unbundle per link. A forced run or one writing a fresh snapshot because the latest is damaged
clones instead, and so does one that holds no identity for an encrypted snapshot
(`Preparer._seeded`).

Never trusted half way: any failure of the seed (a broken chain, a bundle that does not match
its manifest, an identity that cannot decrypt an encrypted one, the store unreachable,
a fetch git refuses) removes the repository and raises `SeedFailed`; the caller clones afresh.
Only a fetch failure a clone would meet too (network, not found, timeout, disk full) is raised
as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import RepoRef
from repovault_pipeline.core.vault import crypt
from repovault_pipeline.core.vault.gitops import GitClient, RemoteState
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.mirror import REMOTE_FAILURES, fetch_remote
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.rebuild import fetch_snapshot, sealed_what
from repovault_pipeline.core.vault.records import Manifest


class SeedFailed(ArchiveError):
    """The snapshot could not seed the clone; the message says why. Nothing is left at the
    destination: the caller clones afresh."""


def seed(
    git: GitClient,
    reader: SnapshotReader[Manifest],
    latest: Manifest,
    ref: RepoRef,
    remote: RemoteState,
    dest: Path,
    identity: Path | None = None,
) -> LocalRepo:
    """`dest`: a bare repository holding what a fresh clone of `ref` would, built from the
    snapshot `latest` (its chain, each bundle checked against its manifest; `identity`
    decrypts an encrypted one) and a fetch of what is new since (`remote`: what ls-remote
    just said of HEAD)."""
    try:
        try:
            crypt.require_identity(identity, crypt.Sealing.of(latest), sealed_what(latest))
            git.run(["init", "--bare", "--quiet", "--template=", str(dest)])
            repo = LocalRepo(dest, git)
            fetch_snapshot(reader, latest, repo, identity)
            # Where a clone's config names the remote: `git lfs fetch` reads it.
            repo.git("config", "remote.origin.url", ref.url)
        except ArchiveError as exc:  # the store unreachable too: a clone may work all the same
            raise SeedFailed(
                f"snapshot {latest.snapshot_id} could not seed the clone: {exc}"
            ) from None
        git.log.info(
            "seeded %s from snapshot %s; fetching what is new", ref.url, latest.snapshot_id
        )
        try:
            return fetch_remote(git, ref, dest, remote)
        except REMOTE_FAILURES:
            raise
        except ArchiveError as exc:
            raise SeedFailed(f"the fetch into the seeded clone failed: {exc}") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
