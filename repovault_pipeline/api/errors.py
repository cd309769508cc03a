"""The one shape of every refusal, `{"error": "one line"}`, and the masking of every error body
on its way out: error texts are where callers' input comes back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from ..core.common.redact import mask_secrets


class SafeJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate a caller sent (`\\ud800`)
    comes back as the escape it was, never as text UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def bad(
    status: int, reason: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> SafeJSON:
    return SafeJSON({"error": reason, **extra}, status_code=status, headers=headers)


class Refused(Exception):
    """An answer of status >= 400 with one line of reason (and headers: WWW-Authenticate,
    Retry-After; and extra fields such as `refused`), raised where a dependency or a handler
    finds it."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers, self.extra = status, reason, headers, extra

    def answer(self) -> SafeJSON:
        return bad(self.status, self.reason, self.headers, **self.extra)


def error_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response of the refusal shape."""
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


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_doc("a bad parameter or body, with the reason"),
    401: error_doc("no bearer token, or one unknown, revoked, expired or not for this API"),
    403: error_doc("the token's scope is not enough for this route"),
    503: error_doc("the lineage database, the object store or the realm's keys did not answer"),
}
NOT_STORED = {**AUTH_ERRORS, 404: error_doc("no snapshot of the repository is stored")}


class MaskedErrors:
    """ASGI middleware: the body of every answer of status 400 or more goes through
    `mask_secrets` before it leaves, whatever produced it (a handler's reason, FastAPI's
    validation errors echoing the input, an exception handler): one masking function at the
    API's exit."""

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
