"""`/api/repositories`: what the vault holds, read from the store (the manifests and
`latest.json`), the admin's request to prove a snapshot restores, and the admin's restore of a
snapshot to a forge (admin: it writes to another system, with its credentials)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ...core.common.identity import InvalidRepoUrl, parse_repo_id
from ...core.lineage.stats import stored_sizes
from ...core.lineage.verifications import VerifyQueue
from ...core.sources.forges.create import restore_to_forge
from ...core.sources.forges.forge import RepositoryExists
from ...core.vault.catalog import repo_snapshots
from ...core.vault.push import PushRefused
from ...core.vault.reader import archived_repositories
from ...core.vault.rebuild import RestoreError
from ...core.vault.verify import SNAPSHOT_ID
from ..deps import Admin, Reader, VaultDep
from ..errors import AUTH_ERRORS, NOT_STORED, Refused, SafeJSON, error_doc
from ..models import (
    Repositories,
    RepositorySnapshots,
    RestoreBody,
    RestorePushed,
    VerifyAccepted,
)

router = APIRouter(prefix="/api/repositories")


@router.get("", response_model_exclude_unset=True, responses=AUTH_ERRORS, dependencies=[Reader])
def list_repositories(vault: VaultDep) -> Repositories:
    """Archived repositories, their latest snapshot and what they take in the vault
    (`stored_bytes`: bundles, tree, lfs, wiki, metadata, total)."""
    return Repositories.model_validate(
        {
            "repositories": [
                {
                    "repo_id": a.manifest.repo_id,
                    "bucket": a.bucket,
                    "snapshot_id": a.manifest.snapshot_id,
                    "head_commit": a.manifest.head_commit,
                    "default_branch": a.manifest.default_branch,
                    "bundle_bytes": a.manifest.bundle.size,
                    "tree_files": a.manifest.tree.files if a.manifest.tree else 0,
                    "tree_bytes": sizes.tree,
                    "stored_bytes": {**asdict(sizes), "total": sizes.total},
                    "created_at": a.manifest.created_at,
                    "warning": a.warning,  # latest.json damaged: this is the newest complete
                }
                for a in archived_repositories(vault.store, vault.settings.bucket_prefix)
                for sizes in [stored_sizes(vault.store, a.bucket, a.manifest)]
            ]
        }
    )


@router.get(
    "/{repo_id:path}/snapshots",
    response_model_exclude_unset=True,
    responses=NOT_STORED,
    dependencies=[Reader],
)
def list_snapshots(vault: VaultDep, repo_id: str) -> RepositorySnapshots:
    """The repository's complete snapshots, newest first, and which one is latest: its
    code's (`latest`, `snapshots`), its wiki's and its forge metadata's (`wiki`,
    `metadata`: each `{latest, snapshots, warning}`), the ids `restore --snapshot` takes;
    `warning` says why `latest` is the newest complete one when `latest.json` is damaged."""
    ref_id = vault.repo_id(repo_id)
    found = repo_snapshots(vault.store, ref_id, vault.settings.bucket_prefix)
    if found.empty:
        raise Refused(404, f"no snapshot of {ref_id} is stored")
    return RepositorySnapshots.model_validate(
        {
            "repo_id": ref_id,
            "bucket": found.bucket,
            **found.code.to_dict(),
            "wiki": found.wiki.to_dict(),
            "metadata": found.metadata.to_dict(),
        }
    )


@router.post(
    "/{repo_id:path}/verify",
    status_code=202,
    response_model=VerifyAccepted,
    response_model_exclude_unset=True,
    responses=NOT_STORED,
)
def verify_repository(
    vault: VaultDep,
    repo_id: str,
    caller: Admin,
    snapshot: str | None = Query(
        None, description="a snapshot id (`GET .../snapshots`); default: the latest"
    ),
) -> JSONResponse:
    """Start the `restorable` check of the repository's snapshot: 202 with the check's
    id (`verify_id`) and where to read it (`GET /api/verifications/{verify_id}`). The check
    runs as a Dagster run, not in the API. While a check of the same snapshot is queued or
    running, asking again gives that check (`"new": false`)."""
    ref_id = vault.repo_id(repo_id)
    if snapshot is not None and not SNAPSHOT_ID.fullmatch(snapshot):
        raise Refused(400, f"{snapshot[:80]!r} is not a snapshot id (yyyymmddTHHMMSSZ-<12 hex>)")
    if repo_snapshots(vault.store, ref_id, vault.settings.bucket_prefix).empty:
        raise Refused(404, f"no snapshot of {ref_id} is stored: nothing to verify")
    check, new = VerifyQueue(vault.lineage().engine).ask(ref_id, snapshot, caller.who)
    where = f"/api/verifications/{check.verify_id}"
    answer = VerifyAccepted.model_validate({**vars(check), "new": new, "url": where})
    return SafeJSON(
        answer.model_dump(exclude_unset=True), status_code=202, headers={"Location": where}
    )


RESTORE_ERRORS = {
    **NOT_STORED,
    409: error_doc("the target is not empty, is the snapshot's own source, or already exists"),
    502: error_doc("git, the forge or the object store failed: the reason in one line"),
}


@router.post(
    "/{repo_id:path}/restore",
    response_model=RestorePushed,
    response_model_exclude_unset=True,
    responses=RESTORE_ERRORS,
)
def restore_repository(
    vault: VaultDep, repo_id: str, body: RestoreBody, caller: Admin
) -> RestorePushed:
    """Push the repository's snapshot (the latest, or `snapshot`) to `push_url` and/or a
    repository `create` makes: every branch and tag (the target then lists exactly the
    snapshot's), its LFS objects, with `wiki` its wiki. Synchronous: the answer comes when the
    push is done and checked (each git command bounded by REPOVAULT_GIT_TIMEOUT_S). Refused
    with 409, nothing pushed, when the target is not empty or is the source, unless `force`."""
    ref_id = vault.repo_id(repo_id)
    if body.snapshot is not None and not SNAPSHOT_ID.fullmatch(body.snapshot):
        raise Refused(400, f"{body.snapshot[:80]!r} is not a snapshot id")
    try:
        pushed, created = restore_to_forge(
            vault.settings,
            vault.store,
            parse_repo_id(ref_id),
            push=body.push_url,
            create=body.create,
            snapshot_id=body.snapshot,
            wiki=body.wiki,
            force=body.force,
        )
    except InvalidRepoUrl as exc:
        raise Refused(400, str(exc)) from None
    except (PushRefused, RepositoryExists) as exc:
        raise Refused(409, str(exc)) from None
    except RestoreError as exc:
        if exc.reason != "no_snapshot":
            raise
        raise Refused(404, str(exc)) from None
    answer = {"repo_id": pushed.repo_id, "code": vars(pushed.code), "warnings": pushed.warnings()}
    if pushed.wiki:
        answer["wiki"] = vars(pushed.wiki)
    if created:
        answer["created"] = created.full_name
    return RestorePushed.model_validate(answer)
