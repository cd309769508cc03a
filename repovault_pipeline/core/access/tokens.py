"""The HTTP API's own tokens (`repovault token create|list|revoke`, docs/contract.md "HTTP API").

A token is `rvt_` and 43 base64url characters: 256 random bits, shown once when it is made.
Only its SHA-256 is kept (`api_tokens.token_hash`), as GitHub keeps its tokens: a random secret
of that size needs no slow hash, and a copy of the database gives no one a token. Scopes nest:
`read` < `submit` < `admin`; a token of a scope may do what the scopes below it may.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from repovault_pipeline.core.lineage.requests import now
from repovault_pipeline.core.lineage.tables import api_tokens

SCOPES = ("read", "submit", "admin")  # each one may do what those before it may
PREFIX = "rvt_"
MAX_NAME = 100
# `last_used_at` is written at most this often per token: not one write per API call.
LAST_USED_EVERY = timedelta(minutes=1)


def covers(held: str, needed: str) -> bool:
    """Whether a token of scope `held` may do what `needed` allows."""
    return SCOPES.index(held) >= SCOPES.index(needed)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """A token's row, without the token (which is kept nowhere)."""

    token_id: str
    name: str | None
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenStore:
    """Reads and writes `api_tokens` on the lineage database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, scope: str, name: str | None = None) -> tuple[ApiToken, str]:
        """A new token of `scope`: its row and the token, which only the caller ever sees."""
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        if name is not None and len(name) > MAX_NAME:
            raise ValueError(f"the name has {len(name)} characters; at most {MAX_NAME}")
        token = PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(secrets.token_hex(8), name, scope, now(), None, None)
        with self.engine.begin() as conn:
            conn.execute(insert(api_tokens).values(**vars(row), token_hash=token_hash(token)))
        return row, token

    def list(self) -> list[ApiToken]:
        columns = [api_tokens.c[name] for name in ApiToken.__dataclass_fields__]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns).order_by(api_tokens.c.created_at))
            return [ApiToken(**row._mapping) for row in rows]

    def revoke(self, token_id: str) -> ApiToken | None:
        """Revoke the token (at once: the next call with it is refused); None when there is no
        such token. Revoking twice keeps the first time."""
        with self.engine.begin() as conn:
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return next((t for t in self.list() if t.token_id == token_id), None)

    def authenticate(self, token: str) -> ApiToken | None:
        """The live token `token` is, else None (unknown or revoked); notes its use."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens).where(api_tokens.c.token_hash == token_hash(token))
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        at = now()
        if row.last_used_at is None or at - row.last_used_at >= LAST_USED_EVERY:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.token_id == row.token_id)
                    .values(last_used_at=at)
                )
        fields = {k: v for k, v in row._mapping.items() if k in ApiToken.__dataclass_fields__}
        return ApiToken(**{**fields, "last_used_at": at})
