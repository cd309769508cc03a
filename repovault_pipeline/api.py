"""`repovault serve`: the HTTP API for systems and people that should not need Kafka or the
Dagster UI. Requests take the same validation and Kafka path as `repovault submit`
(`core.submit`); everything else reads the lineage tables and the store. OpenAPI at /api/docs.

A bad body (not JSON, too large, too many URLs, wrong types) gets a 4xx with a reason and
changes nothing: every URL is validated before the first is recorded.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from .cli import explain
from .core.catalog import repo_snapshots
from .core.errors import ArchiveError, SchemaMismatch, TransientError
from .core.identity import InvalidRepoUrl, RepoRef
from .core.kafka import BrokerUnavailable
from .core.lineage import STATUSES, LineageStore, open_lineage
from .core.lineage import Request as LineageRow
from .core.oidc import KeysUnavailable, OidcVerifier, RefusedToken, looks_like_jwt
from .core.redact import mask_and_cut, mask_secrets
from .core.restore import resolve_target
from .core.settings import KEEP_CHOICES, Settings, keep_choices
from .core.snapshot import archived_repositories
from .core.stats import compute_stats, stored_sizes
from .core.store import ObjectStore, open_store
from .core.submit import submit, validate_urls
from .core.tokens import PREFIX, SCOPES, TokenStore, covers
from .core.verifications import VerifyQueue
from .core.verify import SNAPSHOT_ID

MAX_BODY_BYTES = 1024 * 1024
MAX_URLS = 1000
MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000  # far past any table; keeps the number inside every SQL integer
REALM = 'Bearer realm="repovault"'
OPENAPI_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"
DOCS_ASSETS = f"{DOCS_URL}/assets"
OAUTH2_REDIRECT_URL = f"{DOCS_URL}/oauth2-redirect"


class RequestsBody(BaseModel):
    """`POST /api/requests`: `{"urls": [URL, ...], "keep": {...}, "force": false}`, 1 to 1,000
    URLs; `keep` is optional, as in `repovault submit --[no-]lfs --[no-]wiki --[no-]metadata`;
    `"force": true` writes a fresh full snapshot even if nothing changed (repairs a damaged
    one), as `repovault submit --force`."""

    urls: list[str]
    keep: dict[str, bool] | None = Field(
        None,
        description=f"what the runs keep beside the history, any of {', '.join(KEEP_CHOICES)} "
        "(true or false); what it leaves out follows REPOVAULT_KEEP_*",
        examples=[{"lfs": False, "wiki": True}],
    )
    force: bool = False


class Vault:
    """What the handlers share: settings, the store, the lineage database (opened lazily), the
    Keycloak realm's keys (when REPOVAULT_OIDC_ISSUER is set) and the submission limits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: ObjectStore = open_store(settings)
        self._lineage: LineageStore | None = None
        self.oidc = (
            OidcVerifier(
                settings.oidc_issuer,
                settings.oidc_jwks_url,
                settings.oidc_audience,
                settings.db_timeout_s,
            )
            if settings.oidc_issuer
            else None
        )
        self.submissions = SubmitLimit(settings.api_submit_per_minute)

    def lineage(self) -> LineageStore:
        if self._lineage is None:
            self._lineage = open_lineage(self.settings.db_url, self.settings.db_timeout_s)
        return self._lineage


class SafeJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate a caller sent (`\\ud800`)
    comes back as the escape it was, never as text UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def _bad(
    status: int, reason: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> SafeJSON:
    return SafeJSON({"error": reason, **extra}, status_code=status, headers=headers)


class Refused(Exception):
    """An answer of status >= 400 with one line of reason (and headers: WWW-Authenticate,
    Retry-After), raised where a dependency or a handler finds it."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


@dataclass(frozen=True)
class Caller:
    """Who called: `token:<id>` or `keycloak:<user>`, and the scope they hold."""

    who: str
    scope: str


class SubmitLimit:
    """URLs each caller may submit: REPOVAULT_API_SUBMIT_PER_MINUTE, a token bucket per caller
    that refills continuously (a burst of the whole minute's allowance, then its rate). Kept in
    this process's memory: each API replica counts on its own, so N replicas behind one
    address let a token submit up to N times the rate."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, who: str, urls: int) -> float:
        """Take `urls` from the caller's allowance: 0 when allowed, else the seconds until it
        would be (nothing taken)."""
        at = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(who, (self.capacity, at))
            tokens = min(self.capacity, tokens + (at - then) * self.rate)
            if tokens < urls:
                self._buckets[who] = (tokens, at)
                return (urls - tokens) / self.rate
            self._buckets[who] = (tokens - urls, at)
            return 0.0


_bearer = HTTPBearer(
    auto_error=False,
    description="An API token (`repovault token create`, `rvt_...`) or an access token of the "
    "Keycloak realm (REPOVAULT_OIDC_ISSUER) holding a repovault-read/submit/admin role.",
)

_BEARER = Depends(_bearer)


def _authenticate(vault: Vault, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The caller of a bearer token; `Refused` 401 when there is none or it is not valid, 503
    when the realm's keys cannot be fetched. The token itself is never logged nor echoed."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Refused(
            401,
            "this route needs Authorization: Bearer <token>; make a token with "
            "`repovault token create --scope read` (or use a Keycloak access token)",
            {"WWW-Authenticate": REALM},
        )
    token = credentials.credentials
    invalid = {"WWW-Authenticate": f'{REALM}, error="invalid_token"'}
    if token.startswith(PREFIX):
        found = TokenStore(vault.lineage().engine).authenticate(token)
        if found is None:
            raise Refused(
                401, "the API token is unknown or revoked (`repovault token list`)", invalid
            )
        return Caller(f"token:{found.token_id}", found.scope)
    if vault.oidc is None or not looks_like_jwt(token):
        raise Refused(
            401,
            "the bearer token is not an API token (rvt_...)"
            + ("" if vault.oidc is None else " nor a Keycloak JWT"),
            invalid,
        )
    try:
        identity = vault.oidc.identify(token)
    except RefusedToken as exc:
        raise Refused(401, str(exc), invalid) from None
    except KeysUnavailable as exc:
        raise Refused(503, mask_secrets(str(exc))) from None
    if identity.scope is None:
        roles = ", ".join(f"repovault-{s}" for s in SCOPES)
        raise Refused(
            403,
            f"the Keycloak user {identity.subject} holds none of the roles {roles}",
            {"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    return Caller(f"keycloak:{identity.subject}", identity.scope)


def _need(vault: Vault, scope: str) -> Callable[..., Caller]:
    """A route's dependency: the caller, holding `scope` or more; else 401 or 403."""

    def dependency(credentials: HTTPAuthorizationCredentials | None = _BEARER) -> Caller:
        caller = _authenticate(vault, credentials)
        if not covers(caller.scope, scope):
            raise Refused(
                403,
                f"this route needs the {scope} scope; the token has {caller.scope}",
                {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
            )
        return caller

    return dependency


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            }
        },
    }


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("a bad parameter or body, with the reason"),
    401: _error("no bearer token, or one unknown, revoked, expired or not for this API"),
    403: _error("the token's scope is not enough for this route"),
    503: _error("the lineage database, the object store or the realm's keys did not answer"),
}


class MaskedErrors:
    """ASGI middleware: the body of every answer of status 400 or more goes through
    `mask_secrets` before it leaves, whatever produced it (a handler's reason, FastAPI's
    validation errors echoing the input, an exception handler): one masking function at the
    API's exit, since error texts are where callers' input comes back."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def masked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start.update(message)
                return
            if not start:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            masked = mask_secrets(body.decode("utf-8", "backslashreplace")).encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(masked)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": masked})

        await self.app(scope, receive, masked_send)


def _row(r: LineageRow) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(r).items()}


async def _read_body(request: Request) -> bytes | JSONResponse:
    """The body, read up to MAX_BODY_BYTES; a larger one is refused before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _bad(413, f"body of {declared} bytes; at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _bad(413, f"body larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _parse_body(raw: bytes) -> RequestsBody | JSONResponse:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _bad(400, 'the body is not JSON; send {"urls": ["https://host/owner/name", ...]}')
    except RecursionError:
        return _bad(400, 'the body nests arrays or objects too deeply; send {"urls": [...]}')
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return _bad(400, "the body holds a lone surrogate escape (such as \\ud800): not text")
    if not isinstance(doc, dict) or not isinstance(doc.get("urls"), list):
        return _bad(400, 'the body must be a JSON object with "urls": a list of URL strings')
    urls = doc["urls"]
    fields = set(RequestsBody.model_fields)
    if set(doc) - fields:
        unknown = [mask_and_cut(str(name), 80) for name in sorted(set(doc) - fields)]
        return _bad(400, f"unknown fields {unknown}; the body takes {', '.join(sorted(fields))}")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        return _bad(400, '"force" must be true or false')
    if not urls:
        return _bad(400, '"urls" is empty; give at least one URL')
    if len(urls) > MAX_URLS:
        return _bad(413, f"{len(urls)} URLs; at most {MAX_URLS} per request")
    wrong = [i for i, u in enumerate(urls) if not isinstance(u, str)]
    if wrong:
        return _bad(400, f"urls[{wrong[0]}] is not a string; every URL must be a string")
    try:
        keep = keep_choices(doc.get("keep"))  # the check of the CLI's flags and of `pendientes`
    except ValueError as exc:
        return _bad(400, str(exc))
    return RequestsBody(urls=urls, keep=keep or None, force=force)


def create_app(settings: Settings | None = None) -> FastAPI:
    vault = Vault(settings or Settings.from_env())
    app = FastAPI(
        title="RepoVault",
        summary="Request archives of git repositories, read their state, prove they restore.",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: _serve_docs instead
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        default_response_class=SafeJSON,
    )
    _serve_docs(app)
    app.add_middleware(MaskedErrors)
    read, submitter, admin = (Depends(_need(vault, scope)) for scope in SCOPES)

    @app.post(
        "/api/requests",
        status_code=202,
        responses={
            **_AUTH_ERRORS,
            413: _error("too large a body, or more URLs than allowed"),
            429: _error("the token's submissions per minute are used up; see Retry-After"),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RequestsBody.model_json_schema()}},
            }
        },
    )
    async def create_requests(request: Request, caller: Caller = submitter) -> Any:
        """Validate every URL, then record a `pending` request and publish it to `pendientes`
        for each, with `keep` when given: 202 with the request ids (and `keep`). One bad URL or
        a bad `keep`: 400 with the reason, nothing recorded or published. Each token may submit
        REPOVAULT_API_SUBMIT_PER_MINUTE URLs a minute: past that, 429 with Retry-After."""
        raw = await _read_body(request)
        if isinstance(raw, JSONResponse):
            return raw
        body = _parse_body(raw)
        if isinstance(body, JSONResponse):
            return body
        refs, refused = validate_urls(body.urls, vault.settings)
        if refused:
            return _bad(
                400,
                f"{len(refused)} of {len(body.urls)} URLs refused; nothing was requested",
                refused=[asdict(r) for r in refused],
            )
        per_minute = vault.settings.api_submit_per_minute
        if len(refs) > per_minute:
            return _bad(
                413,
                f"{len(refs)} URLs; a token may submit at most {per_minute} a minute "
                "(REPOVAULT_API_SUBMIT_PER_MINUTE): send fewer at a time",
            )
        wait = vault.submissions.take(caller.who, len(refs))
        if wait:
            seconds = math.ceil(wait)
            return _bad(
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
            return _bad(503, mask_secrets(str(exc)))
        return JSONResponse(
            {
                "requests": [
                    {"request_id": rid, "repo_id": ref.repo_id, "repo_url": ref.url}
                    for ref, rid in queued
                ],
                **({"keep": body.keep} if body.keep else {}),
            },
            status_code=202,
        )

    @app.get(
        "/api/requests/{request_id}",
        responses={**_AUTH_ERRORS, 404: _error("no such request")},
        dependencies=[read],
    )
    def get_request(request_id: str) -> dict[str, Any]:
        """One request with its timestamps and outcome."""
        found = vault.lineage().get(request_id)
        if found is None:
            raise HTTPException(404, f"no request {request_id}")
        return _row(found)

    @app.get("/api/requests", responses=_AUTH_ERRORS, dependencies=[read])
    def list_requests(
        status: str | None = Query(None, description=f"one of {', '.join(STATUSES)}"),
        repo: str | None = Query(None, description="a repository URL or repo_id"),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ) -> dict[str, Any]:
        """Requests, newest first, a page at a time (`limit`, `offset`)."""
        if status is not None and status not in STATUSES:
            raise HTTPException(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
        repo_id = _repo_id(repo, vault.settings) if repo else None
        rows = vault.lineage().find(
            repo_id=repo_id,
            statuses=[status] if status else None,
            limit=limit,
            offset=offset,
        )
        return {"requests": [_row(r) for r in rows], "limit": limit, "offset": offset}

    @app.get("/api/repositories", responses=_AUTH_ERRORS, dependencies=[read])
    def list_repositories() -> dict[str, Any]:
        """Archived repositories, their latest snapshot and what they take in the vault
        (`stored_bytes`: bundles, tree, lfs, wiki, metadata, total)."""
        return {
            "repositories": [
                {
                    "repo_id": m["repo_id"],
                    "bucket": m["bucket"],
                    "snapshot_id": m["snapshot_id"],
                    "head_commit": m["head_commit"],
                    "default_branch": m["default_branch"],
                    "bundle_bytes": m["bundle"]["size"],
                    "tree_files": m["tree"]["files"],
                    "tree_bytes": m["tree"]["bytes"],
                    "stored_bytes": {**asdict(sizes), "total": sizes.total},
                    "created_at": m["created_at"],
                    "warning": m["warning"],  # latest.json damaged: this is the newest complete
                }
                for m in archived_repositories(vault.store, vault.settings.bucket_prefix)
                for sizes in [stored_sizes(vault.store, m)]
            ]
        }

    @app.get(
        "/api/repositories/{repo_id:path}/snapshots",
        responses={**_AUTH_ERRORS, 404: _error("no snapshot of the repository is stored")},
        dependencies=[read],
    )
    def list_snapshots(repo_id: str) -> dict[str, Any]:
        """The repository's complete snapshots, newest first, and which one is latest: its
        code's (`latest`, `snapshots`), its wiki's and its forge metadata's (`wiki`,
        `metadata`: each `{latest, snapshots, warning}`), the ids `restore --snapshot` takes;
        `warning` says why `latest` is the newest complete one when `latest.json` is damaged."""
        ref_id = _repo_id(repo_id, vault.settings)
        found = repo_snapshots(vault.store, ref_id, vault.settings.bucket_prefix)
        if found.empty:
            raise HTTPException(404, f"no snapshot of {ref_id} is stored")
        return {
            "repo_id": ref_id,
            "bucket": found.bucket,
            **found.code.to_dict(),
            "wiki": found.wiki.to_dict(),
            "metadata": found.metadata.to_dict(),
        }

    @app.post(
        "/api/repositories/{repo_id:path}/verify",
        status_code=202,
        responses={**_AUTH_ERRORS, 404: _error("no snapshot of the repository is stored")},
    )
    def verify_repository(
        repo_id: str,
        snapshot: str | None = Query(
            None, description="a snapshot id (`GET .../snapshots`); default: the latest"
        ),
        caller: Caller = admin,
    ) -> JSONResponse:
        """Start the `restorable` check of the repository's snapshot: 202 with the check's
        id (`verify_id`) and where to read it (`GET /api/verifications/{verify_id}`). The check
        runs as a Dagster run, not in the API. While a check of the same snapshot is queued or
        running, asking again gives that check (`"new": false`)."""
        ref_id = _repo_id(repo_id, vault.settings)
        if snapshot is not None and not SNAPSHOT_ID.fullmatch(snapshot):
            raise Refused(
                400, f"{snapshot[:80]!r} is not a snapshot id (yyyymmddTHHMMSSZ-<12 hex>)"
            )
        if repo_snapshots(vault.store, ref_id, vault.settings.bucket_prefix).empty:
            raise Refused(404, f"no snapshot of {ref_id} is stored: nothing to verify")
        check, new = VerifyQueue(vault.lineage().engine).ask(ref_id, snapshot, caller.who)
        where = f"/api/verifications/{check.verify_id}"
        return SafeJSON(
            {**check.to_dict(), "new": new, "url": where},
            status_code=202,
            headers={"Location": where},
        )

    @app.get(
        "/api/verifications/{verify_id}",
        responses={**_AUTH_ERRORS, 404: _error("no such check")},
        dependencies=[read],
    )
    def get_verification(verify_id: str) -> dict[str, Any]:
        """A check started with POST .../verify: `queued` (its run not yet requested),
        `running`, then `passed` or `failed` with the `verdict` (the `restorable` check's
        figures and `summary`), or `error` with the reason it ended without one."""
        found = VerifyQueue(vault.lineage().engine).get(verify_id)
        if found is None:
            raise Refused(404, f"no check {verify_id[:80]}")
        return found.to_dict()

    @app.get("/api/stats", responses=_AUTH_ERRORS, dependencies=[read])
    def stats() -> dict[str, Any]:
        """The `vault_stats` figures, computed now."""
        return compute_stats(vault.settings, vault.store, vault.lineage()).to_dict()

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 when the lineage database and the object store answer, else 503 saying which."""
        problems = []
        try:
            with vault.lineage().engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to answer is "down"; the reason is reported
            problems.append(f"lineage database: {type(exc).__name__}")
        try:
            vault.store.list_buckets(vault.settings.bucket_prefix)
        except ArchiveError as exc:
            problems.append(f"object store: {mask_secrets(str(exc))[:200]}")
        if problems:
            return JSONResponse({"status": "down", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    registry = CollectorRegistry()
    registry.register(_StatsCollector(vault))

    @app.get(
        "/metrics", response_class=PlainTextResponse, responses=_AUTH_ERRORS, dependencies=[read]
    )
    def metrics() -> PlainTextResponse:
        """Prometheus metrics, computed at each scrape from the same figures as /api/stats;
        a read token (Prometheus: `authorization: {credentials_file: ...}`)."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return _bad(exc.status, exc.reason, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_refused(_: Request, exc: HTTPException) -> JSONResponse:
        """Every refusal has the same shape: `{"error": "one line"}`."""
        return _bad(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        """A query or path parameter of the wrong type or out of range: 400, one line."""
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return _bad(400, f"{where}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(SchemaMismatch)
    async def schema_refused(_: Request, exc: SchemaMismatch) -> JSONResponse:
        """A lineage database this RepoVault cannot use (a newer one migrated it): 503 with the
        reason, which says what to do; nothing was changed."""
        return _bad(503, mask_secrets(str(exc)))

    @app.exception_handler(ArchiveError)
    async def store_failed(_: Request, exc: ArchiveError) -> JSONResponse:
        """The store or git failed under a read: 503 (retry) or 502, with the reason (the
        CLI's line when the object store cannot be reached)."""
        reason = explain(exc, vault.settings)[1]
        return _bad(503 if isinstance(exc, TransientError) else 502, mask_secrets(reason))

    @app.exception_handler(SQLAlchemyError)
    async def lineage_failed(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        """The lineage database refused, failed, or did not answer within
        REPOVAULT_DB_TIMEOUT_S: 503 with the CLI's one line (password hidden)."""
        return _bad(503, mask_secrets(explain(exc, vault.settings)[1]))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with what this API answers instead of FastAPI's 422: a 400 with one
    line (`bad_parameter`)."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in doc["paths"].values():
            for operation in path.values():
                if operation.get("responses", {}).pop("422", None) is not None:
                    operation["responses"].setdefault("400", _AUTH_ERRORS[400])
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /api/docs from files on this machine (those fastapi-offline ships), so the
    page works without internet; its OAuth2 redirect under /api too. Behind a proxy that strips
    a prefix, every URL of the page carries the request's `root_path`."""
    app.mount(
        DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets"
    )

    @app.get(DOCS_URL, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # Swagger UI's default sends the document's URL to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _ref(target: str, settings: Settings) -> RepoRef:
    """A URL or `repo_id` from a path or query; 400 with the reason otherwise."""
    try:
        return resolve_target(target, settings)
    except InvalidRepoUrl as exc:
        raise HTTPException(400, f"{mask_secrets(target)[:80]!r}: {exc}") from None


def _repo_id(target: str, settings: Settings) -> str:
    return _ref(target, settings).repo_id


class _StatsCollector:
    """Gauges from `core.stats` at each scrape: requests by status and source, runs, bytes,
    failures by reason, and the oldest check of an archived repository."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = compute_stats(self.vault.settings, self.vault.store, self.vault.lineage())
        f = stats.figures
        by_status = GaugeMetricFamily(
            "repovault_requests", "Requests in repo_requests by status", labels=["status"]
        )
        for status in STATUSES:
            by_status.add_metric([status], f[f"requests_{status}"])
        yield by_status
        by_source = GaugeMetricFamily(
            "repovault_requests_by_source", "Requests by source", labels=["source"]
        )
        for name, value in f.items():
            if name.startswith("requests_source_"):
                by_source.add_metric([name.removeprefix("requests_source_")], value)
        yield by_source
        yield GaugeMetricFamily(
            "repovault_runs_finished_24h", "Runs finished in the last 24 h", f["run_time_count_24h"]
        )
        runtime = GaugeMetricFamily(
            "repovault_run_seconds", "Run time over 24 h by quantile", labels=["quantile"]
        )
        runtime.add_metric(["0.5"], f["run_time_p50_s"])
        runtime.add_metric(["0.95"], f["run_time_p95_s"])
        yield runtime
        yield GaugeMetricFamily(
            "repovault_archived_repositories",
            "Repositories with a snapshot",
            f["archived_repositories"],
        )
        stored = GaugeMetricFamily("repovault_stored_bytes", "Bytes in the vault", labels=["kind"])
        for kind in ("bundle", "tree", "lfs", "wiki", "metadata"):
            stored.add_metric([kind], f[f"{kind}_bytes"])
        yield stored
        failures = GaugeMetricFamily(
            "repovault_failures_24h",
            "Failed requests in the last 24 h by reason",
            labels=["reason"],
        )
        for reason, count in stats.failures.items():
            failures.add_metric([reason], count)
        yield failures
        yield GaugeMetricFamily(
            "repovault_oldest_check_age_hours",
            "Hours since the least recently checked archived repository was checked",
            f["oldest_check_age_h"],
        )
        yield GaugeMetricFamily(
            "repovault_past_refresh_interval",
            "Archived repositories not checked within REPOVAULT_REFRESH_INTERVAL_H",
            f["past_refresh_interval"],
        )
