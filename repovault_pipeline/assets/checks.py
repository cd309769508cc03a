"""`restorable`: the asset check on `repo_archive` that proves a partition's latest snapshot
restores (`core.verify`). It runs in every archive run after the asset (Dagster runs a selected
asset's checks with it; a failed run skips it, and for a partition that never archived the
planned execution is dropped: `check_records`) as the run pass, which checks what the run wrote
against its manifest and downloads nothing (the quick pass, all of `tree/` from a listing,
after a run that wrote a fresh snapshot: a repair is proven whole); and as the deep pass
(download, rebuild, `git fsck --full`) in a run of the check alone: the weekly restore drill, a
check asked for over the HTTP API, "Execute check" in the UI: whoever asks for proof gets the
full one. A failed verdict makes the partition's next archive run write a fresh snapshot. A run
of the check asked for over the HTTP API (tagged with its verify id, `sensors/verify.py`) also
writes the verdict into that check's row, where `GET /api/verifications/{id}` reads it."""

from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetRecordsFilter,
    MetadataValue,
    asset_check,
)

from ..core.common.errors import ArchiveError
from ..core.common.identity import parse_repo_id
from ..core.common.redact import mask_secrets
from ..core.intake.runs import TAG_VERIFY_ID, TAG_VERIFY_SNAPSHOT
from ..core.lineage.verifications import VerifyQueue
from ..core.vault.verify import DEEP, QUICK, RUN, verify
from ..partitions import repositories
from ..resources import LineageResource, VaultResource
from .archive import repo_archive


@asset_check(
    asset=repo_archive,
    partitions_def=repositories,
    blocking=False,
    description=(
        "The latest snapshot restores and matches its manifest. In an archive run, the run "
        "pass (metadata `depth`: run): the bundles of its chain listed with the size and ETag "
        "their manifests record, the tree/ objects the snapshot changed against tree.json "
        "(ETag and size; up to 32, sampled above) and the LFS objects with their sizes, none "
        "missing (`lfs_missing`: the snapshot is partial); nothing is downloaded. After a run "
        "that wrote a fresh snapshot (a repair), the quick pass: all of tree/ against "
        "tree.json from a listing. In a run of the check alone (restore drill, API, UI), the "
        "deep pass: bundle size and sha256, `git bundle verify`, a bare rebuild with "
        "`git fsck --full` (damage fails; objects in a legacy format the source serves, e.g. "
        "`missingSpaceBeforeEmail`, are counted in `fsck_legacy`), every ref and HEAD, a "
        "sample of LFS objects hashed, and the same listings. `repovault verify` runs the "
        "quick pass, `repovault verify --deep` the deep one."
    ),
)
def restorable(
    context: AssetCheckExecutionContext, vault: VaultResource, lineage: LineageResource
) -> AssetCheckResult:
    repo_id = context.partition_key
    tags = context.run.tags
    asked = VerifyQueue(lineage.store().engine) if TAG_VERIFY_ID in tags else None
    if asked:
        asked.ran_in(tags[TAG_VERIFY_ID], context.run.run_id)
    depth = _depth(context)
    try:
        verdict = verify(
            vault.settings(),
            vault.store(),
            parse_repo_id(repo_id),
            tags.get(TAG_VERIFY_SNAPSHOT),
            depth=depth,
        )
    except ArchiveError as exc:
        # The store or git could not be asked: nothing is proven either way. A warning, and
        # the archive run that executed the check stays successful.
        reason = mask_secrets(str(exc))
        context.log.warning(f"restorable could not run for {repo_id}: {reason}")
        if asked:
            asked.fail(tags[TAG_VERIFY_ID], f"not verified: {reason}")
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "reason": "unverifiable",
                "detail": reason,
                "depth": depth,
            },
            description=f"not verified: {reason}",
        )
    metadata: dict[str, Any] = {
        "snapshot_id": verdict.snapshot_id or "",
        "depth": verdict.depth,
        "reason": verdict.reason or "ok",
        "detail": verdict.line(),
        "refs": MetadataValue.int(verdict.refs),
        "bundle_bytes": MetadataValue.int(verdict.bundle_bytes),
        "bundle_rebuilt": MetadataValue.bool(verdict.bundle_rebuilt),
        "tree_entries": MetadataValue.int(verdict.tree_entries),
        "tree_checked": MetadataValue.int(verdict.tree_checked),
        "duration_s": MetadataValue.float(verdict.duration_s),
        "fsck_legacy": ", ".join(f"{k}={n}" for k, n in sorted(verdict.fsck_legacy.items()))
        or "none",
    }
    if verdict.unverified:
        # An encrypted snapshot this deployment holds no key for: not ok, yet no damage
        # either (a warning: the next run writes no fresh snapshot over it).
        context.log.warning(f"restorable could not verify: {verdict.line()}")
    elif not verdict.ok:
        context.log.error(f"restorable failed: {verdict.line()}")
    if asked:
        asked.finish(tags[TAG_VERIFY_ID], {**verdict.to_dict(), "summary": verdict.line()})
    return AssetCheckResult(
        passed=verdict.ok,
        severity=AssetCheckSeverity.WARN if verdict.unverified else AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=verdict.line(),
    )


def _depth(context: AssetCheckExecutionContext) -> str:
    """Which pass: in the run that materialized the partition's `repo_archive` (the run's own
    record, whoever launched it: a run's asset selection is not set alike by every launcher),
    the run pass, or the quick one when the run wrote a fresh snapshot; else, in a run of the
    check alone, the deep pass."""
    found = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=repo_archive.key, asset_partitions=[context.partition_key]),
        limit=1,
    )
    if not found.records or found.records[0].run_id != context.run.run_id:
        return DEEP
    materialization = found.records[0].asset_materialization
    fresh = materialization.metadata.get("fresh") if materialization else None
    return QUICK if fresh is not None and fresh.value else RUN
