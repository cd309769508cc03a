"""`/api/requests`: ask for archives and read the requests back. The body is read and checked by
hand before FastAPI sees it, so a bad one (not JSON, too large, too many URLs, wrong types) gets
one line saying what is wrong, and every URL is validated before the first is recorded."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...core.common.redact import mask_and_cut, mask_secrets
from ...core.common.settings import keep_choices
from ...core.intake.kafka import BrokerUnavailable
from ...core.intake.submit import submit, validate_urls
from ...core.lineage.requests import STATUSES
from ...core.lineage.rows import Request as LineageRow
from ..deps import Reader, Submitter, VaultDep
from ..errors import AUTH_ERRORS, Refused, error_doc
from ..models import RequestPage, RequestRow, RequestsAccepted, RequestsBody

MAX_BODY_BYTES = 1024 * 1024
MAX_URLS = 1000
MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000  # far past any table; keeps the number inside every SQL integer

router = APIRouter(prefix="/api/requests")


async def requests_body(request: Request) -> RequestsBody:
    """The body, read up to MAX_BODY_BYTES (a larger one is refused before it is all read), then
    checked field by field: `Refused` 400 or 413 with the first thing wrong."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"body of {declared} bytes; at most {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    return _parse_body(bytes(raw))


def _parse_body(raw: bytes) -> RequestsBody:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(
            400, 'the body is not JSON; send {"urls": ["https://host/owner/name", ...]}'
        ) from None
    except RecursionError:
        raise Refused(
            400, 'the body nests arrays or objects too deeply; send {"urls": [...]}'
        ) from None
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Refused(
            400, "the body holds a lone surrogate escape (such as \\ud800): not text"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("urls"), list):
        raise Refused(400, 'the body must be a JSON object with "urls": a list of URL strings')
    urls = doc["urls"]
    fields = set(RequestsBody.model_fields)
    if set(doc) - fields:
        unknown = [mask_and_cut(str(name), 80) for name in sorted(set(doc) - fields)]
        raise Refused(400, f"unknown fields {unknown}; the body takes {', '.join(sorted(fields))}")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        raise Refused(400, '"force" must be true or false')
    if not urls:
        raise Refused(400, '"urls" is empty; give at least one URL')
    if len(urls) > MAX_URLS:
        raise Refused(413, f"{len(urls)} URLs; at most {MAX_URLS} per request")
    wrong = [i for i, u in enumerate(urls) if not isinstance(u, str)]
    if wrong:
        raise Refused(400, f"urls[{wrong[0]}] is not a string; every URL must be a string")
    try:
        keep = keep_choices(doc.get("keep"))  # the check of the CLI's flags and of `pendientes`
    except ValueError as exc:
        raise Refused(400, str(exc)) from None
    return RequestsBody(urls=urls, keep=keep or None, force=force)


@router.post(
    "",
    status_code=202,
    response_model=RequestsAccepted,
    response_model_exclude_unset=True,
    response_class=JSONResponse,
    responses={
        **AUTH_ERRORS,
        413: error_doc("too large a body, or more URLs than allowed"),
        429: error_doc("the token's submissions per minute are used up; see Retry-After"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RequestsBody.model_json_schema()}},
        }
    },
)
async def create_requests(
    vault: VaultDep,
    caller: Submitter,
    body: Annotated[RequestsBody, Depends(requests_body)],
) -> RequestsAccepted:
    """Validate every URL, then record a `pending` request and publish it to `pendientes`
    for each, with `keep` when given: 202 with the request ids (and `keep`). One bad URL or
    a bad `keep`: 400 with the reason, nothing recorded or published. Each token may submit
    REPOVAULT_API_SUBMIT_PER_MINUTE URLs a minute: past that, 429 with Retry-After."""
    refs, refused = validate_urls(body.urls, vault.settings)
    if refused:
        raise Refused(
            400,
            f"{len(refused)} of {len(body.urls)} URLs refused; nothing was requested",
            refused=[asdict(r) for r in refused],
        )
    per_minute = vault.settings.api_submit_per_minute
    if len(refs) > per_minute:
        raise Refused(
            413,
            f"{len(refs)} URLs; a token may submit at most {per_minute} a minute "
            "(REPOVAULT_API_SUBMIT_PER_MINUTE): send fewer at a time",
        )
    wait = vault.submissions.take(caller.who, len(refs))
    if wait:
        seconds = math.ceil(wait)
        raise Refused(
            429,
            f"this token may submit {per_minute} URLs a minute and has used them; "
            f"{len(refs)} more fit in {seconds} s (nothing was requested)",
            {"Retry-After": str(seconds)},
        )
    try:
        # The broker and the database block: off the event loop, like the sync handlers.
        queued = await run_in_threadpool(
            lambda: list(
                submit(vault.settings, vault.lineage, refs, "api", body.keep, force=body.force)
            )
        )
    except BrokerUnavailable as exc:
        raise Refused(503, mask_secrets(str(exc))) from None
    accepted = [
        {"request_id": rid, "repo_id": ref.repo_id, "repo_url": ref.url} for ref, rid in queued
    ]
    return RequestsAccepted.model_validate(
        {"requests": accepted, **({"keep": body.keep} if body.keep else {})}
    )


def _row(r: LineageRow) -> RequestRow:
    return RequestRow.model_validate(r, from_attributes=True)


@router.get(
    "/{request_id}",
    response_model_exclude_unset=True,
    responses={**AUTH_ERRORS, 404: error_doc("no such request")},
    dependencies=[Reader],
)
def get_request(vault: VaultDep, request_id: str) -> RequestRow:
    """One request with its timestamps and outcome."""
    found = vault.lineage().get(request_id)
    if found is None:
        raise Refused(404, f"no request {request_id}")
    return _row(found)


@router.get("", response_model_exclude_unset=True, responses=AUTH_ERRORS, dependencies=[Reader])
def list_requests(
    vault: VaultDep,
    status: str | None = Query(None, description=f"one of {', '.join(STATUSES)}"),
    repo: str | None = Query(None, description="a repository URL or repo_id"),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> RequestPage:
    """Requests, newest first, a page at a time (`limit`, `offset`)."""
    if status is not None and status not in STATUSES:
        raise Refused(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
    repo_id = vault.repo_id(repo) if repo else None
    rows = vault.lineage().find(
        repo_id=repo_id,
        statuses=[status] if status else None,
        limit=limit,
        offset=offset,
    )
    return RequestPage(requests=[_row(r) for r in rows], limit=limit, offset=offset)
