"""`/api/verifications`: the checks started with `POST /api/repositories/.../verify`, read back
from the lineage database while their Dagster runs go."""

from __future__ import annotations

from fastapi import APIRouter

from ...core.lineage.verifications import VerifyQueue
from ..deps import Reader, VaultDep
from ..errors import AUTH_ERRORS, Refused, error_doc
from ..models import Verification

router = APIRouter(prefix="/api/verifications")


@router.get(
    "/{verify_id}",
    response_model_exclude_unset=True,
    responses={**AUTH_ERRORS, 404: error_doc("no such check")},
    dependencies=[Reader],
)
def get_verification(vault: VaultDep, verify_id: str) -> Verification:
    """A check started with POST .../verify: `queued` (its run not yet requested),
    `running`, then `passed` or `failed` with the `verdict` (the `restorable` check's
    figures and `summary`), or `error` with the reason it ended without one."""
    found = VerifyQueue(vault.lineage().engine).get(verify_id)
    if found is None:
        raise Refused(404, f"no check {verify_id[:80]}")
    return Verification.model_validate(found, from_attributes=True)
