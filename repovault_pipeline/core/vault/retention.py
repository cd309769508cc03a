"""Retention, the last step of a snapshot's commit: keep the complete snapshots the policy
keeps (policy.py: the newest REPOVAULT_KEEP_SNAPSHOTS, one per day, week and month for
REPOVAULT_KEEP_DAILY/_WEEKLY/_MONTHLY), the others that alone hold commits (pinned) and those a
kept snapshot's bundle chain rests on; delete the rest and the leftovers of runs that died, then
the LFS objects no remaining snapshot lists."""

from __future__ import annotations

import logging

from repovault_pipeline.core.vault import lfs
from repovault_pipeline.core.vault.chain import chain_needs
from repovault_pipeline.core.vault.layout import CODE, MANIFEST
from repovault_pipeline.core.vault.lease import Lease
from repovault_pipeline.core.vault.localrepo import LocalRepo
from repovault_pipeline.core.vault.policy import Policy
from repovault_pipeline.core.vault.reader import SnapshotReader
from repovault_pipeline.core.vault.records import Manifest


def apply_retention(
    reader: SnapshotReader[Manifest],
    lease: Lease,
    repo: LocalRepo,
    policy: Policy,
    log: logging.Logger,
) -> int:
    """Keep the complete snapshots `policy` keeps, and others that alone hold commits (see
    `_deletable`); sweep incomplete ones. Runs under the lease, so no other live run is
    writing a snapshot here: an incomplete snapshot other than this run's is the leftover of
    a run that died. Returns how many complete snapshots were deleted."""
    lease.confirm()
    store = reader.store
    complete, incomplete = reader.snapshot_ids()
    reasons = policy.reasons(complete)
    kept = [s for s in complete if s in reasons]  # newest first: this run's snapshot leads
    log.debug("retention: kept %s", "; ".join(f"{s} ({', '.join(reasons[s])})" for s in kept))
    others = [s for s in complete if s not in reasons]
    doomed = _deletable(reader, kept, others, repo, log)
    doomed = _unneeded(reader, [s for s in complete if s not in doomed], doomed, log)
    doomed += [s for s in incomplete if s != lease.snapshot_id]
    for snap in doomed:
        # The manifest goes first so a half-deleted snapshot is already invisible.
        store.delete(reader.bucket, [reader.layout.snapshot_key(snap, MANIFEST)])
        folder = reader.layout.snapshot_key(snap, "")
        store.delete(reader.bucket, [i.key for i in store.list(reader.bucket, folder)])
    if doomed:
        log.info("retention: deleted snapshots %s", ", ".join(doomed))
        if reader.layout is CODE:  # only the repository's own snapshots list LFS objects
            # Pinned snapshots stay with their LFS objects: sweep by what remains.
            _sweep_lfs(reader, [s for s in complete if s not in doomed], log)
    return len([s for s in doomed if s in complete])


def _deletable(
    reader: SnapshotReader[Manifest],
    kept: list[str],
    others: list[str],
    repo: LocalRepo,
    log: logging.Logger,
) -> list[str]:
    """The snapshots the policy does not keep that may go: not one whose refs point at
    objects this run's clone (a fresh clone of every branch and tag: exactly what the
    newest snapshot holds) lacks and no retained snapshot names (a force-push rewrote
    history, a branch or tag was deleted): it is pinned, the only copy of those commits."""
    held: set[str] | None = None  # ref tips of the retained snapshots, read when needed
    doomed = []
    for snap in others:  # newest first: of several holding the same commits, the newest stays
        tips = _ref_tips(reader, snap)
        lost = repo.missing(tips)
        if lost:
            if held is None:  # kept[0] is this run's snapshot: the clone itself
                held = set().union(*(_ref_tips(reader, other) for other in kept[1:]))
            if not lost <= held:
                log.info(
                    "retention: snapshot %s kept, the only one holding %d ref tips no "
                    "newer snapshot has (history rewritten or refs deleted upstream)",
                    snap,
                    len(lost),
                )
                held |= tips
                continue
        doomed.append(snap)
    return doomed


def _unneeded(
    reader: SnapshotReader[Manifest], kept: list[str], doomed: list[str], log: logging.Logger
) -> list[str]:
    """Those of `doomed` no kept snapshot's bundle chain rests on: a base stays until the
    last snapshot building on it goes."""
    needed = chain_needs(reader, kept)
    if spared := [s for s in doomed if s in needed]:
        log.info("retention: snapshots %s kept, bases of kept snapshots", ", ".join(spared))
    return [s for s in doomed if s not in needed]


def _sweep_lfs(reader: SnapshotReader[Manifest], kept: list[str], log: logging.Logger) -> None:
    """Delete the LFS objects no remaining snapshot lists in its `lfs.json`."""
    store = reader.store
    stored = [info.key for info in store.list(reader.bucket, lfs.LFS_PREFIX)]
    if not stored:
        return
    wanted: set[str] = set()
    for snap in kept:
        wanted.update(lfs.index_keys(reader.lfs_index(snap)).values())
    unused = [key for key in stored if key not in wanted]
    if unused:
        store.delete(reader.bucket, unused)
        log.info("retention: deleted %d LFS objects no snapshot lists", len(unused))


def _ref_tips(reader: SnapshotReader[Manifest], snapshot_id: str) -> set[str]:
    manifest = reader.manifest(snapshot_id)
    return set(manifest.refs.values()) if manifest else set()
