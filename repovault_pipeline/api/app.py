"""`create_app`: assembles the API from its parts (the vault in `app.state`, the masking
middleware, the exception handlers that give every refusal one shape, the routers) and the
OpenAPI document that says what this API answers instead of FastAPI's 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from ..cli import explain
from ..core.common.errors import ArchiveError, SchemaMismatch, TransientError
from ..core.common.redact import mask_secrets
from ..core.common.settings import Settings
from .deps import Vault, get_vault
from .errors import AUTH_ERRORS, MaskedErrors, Refused, SafeJSON, bad
from .routers import docs, ops, repositories, requests, verifications


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="RepoVault",
        summary="Request archives of git repositories, read their state, prove they restore.",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: routers.docs instead
        openapi_url=docs.OPENAPI_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=docs.OAUTH2_REDIRECT_URL,
        default_response_class=SafeJSON,
    )
    app.state.vault = Vault(settings or Settings.from_env())
    docs.mount_assets(app)
    for module in (docs, requests, repositories, verifications, ops):
        app.include_router(module.router)
    app.add_middleware(MaskedErrors)
    _handle_errors(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every refusal has the same shape: `{"error": "one line"}`, secrets masked."""

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return exc.answer()

    # Starlette's own (a path no route matches, `/api/repositories/a%0A/restore`), FastAPI's too.
    @app.exception_handler(HTTPException)
    async def http_refused(_: Request, exc: HTTPException) -> JSONResponse:
        return bad(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        """A query or path parameter of the wrong type or out of range: 400, one line."""
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return bad(400, f"{where}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(SchemaMismatch)
    async def schema_refused(_: Request, exc: SchemaMismatch) -> JSONResponse:
        """A lineage database this RepoVault cannot use (a newer one migrated it): 503 with the
        reason, which says what to do; nothing was changed."""
        return bad(503, mask_secrets(str(exc)))

    @app.exception_handler(ArchiveError)
    async def store_failed(request: Request, exc: ArchiveError) -> JSONResponse:
        """The store or git failed under a read: 503 (retry) or 502, with the reason (the
        CLI's line when the object store cannot be reached)."""
        reason = explain(exc, get_vault(request).settings)[1]
        return bad(503 if isinstance(exc, TransientError) else 502, mask_secrets(reason))

    @app.exception_handler(SQLAlchemyError)
    async def lineage_failed(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        """The lineage database refused, failed, or did not answer within
        REPOVAULT_DB_TIMEOUT_S: 503 with the CLI's one line (password hidden)."""
        return bad(503, mask_secrets(explain(exc, get_vault(request).settings)[1]))


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
                    operation["responses"].setdefault("400", AUTH_ERRORS[400])
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema
