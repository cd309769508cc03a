"""What the handlers share, as FastAPI dependencies: the vault (settings, store, lineage
database, the realm's keys, the submission limit), the caller of a bearer token and the scope a
route needs, and the per-caller submission rate. The app holds one `Vault` in `app.state`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..core.access.oidc import (
    ROLE_SCOPES,
    KeysUnavailable,
    OidcVerifier,
    RefusedToken,
    looks_like_jwt,
)
from ..core.access.tokens import PREFIX, SCOPES, TokenStore, covers
from ..core.common.identity import InvalidRepoUrl
from ..core.common.redact import mask_secrets
from ..core.common.settings import Settings
from ..core.lineage.requests import LineageStore, open_lineage
from ..core.vault.restore import resolve_target
from ..core.vault.store import ObjectStore, open_store
from .errors import Refused

REALM = 'Bearer realm="repovault"'


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

    def repo_id(self, target: str) -> str:
        """The `repo_id` of a URL or `repo_id` from a path or query; 400 with the reason."""
        try:
            return resolve_target(target, self.settings).repo_id
        except InvalidRepoUrl as exc:
            raise Refused(400, f"{mask_secrets(target)[:80]!r}: {exc}") from None


def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(get_vault)]


@dataclass(frozen=True)
class Caller:
    """Who called: `token:<id>` or `keycloak:<user>`, and the scope they hold."""

    who: str
    scope: str


bearer = HTTPBearer(
    auto_error=False,
    description="An API token (`repovault token create`, `rvt_...`) or an access token of the "
    "Keycloak realm (REPOVAULT_OIDC_ISSUER) holding the role repovault-viewer (read), "
    "repovault-operator (admin) or repovault-read/submit/admin.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def authenticate(vault: VaultDep, credentials: Credentials) -> Caller:
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
        raise Refused(
            403,
            f"the Keycloak user {identity.subject} holds none of the RepoVault roles "
            f"({', '.join(ROLE_SCOPES)}); an operator assigns repovault-viewer or "
            "repovault-operator in Keycloak (docs/deployment.md)",
            {"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    return Caller(f"keycloak:{identity.subject}", identity.scope)


def need(scope: str) -> Callable[..., Caller]:
    """A route's dependency: the caller, holding `scope` or more; else 401 or 403."""

    def dependency(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if not covers(caller.scope, scope):
            raise Refused(
                403,
                f"this route needs the {scope} scope; the token has {caller.scope}",
                {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
            )
        return caller

    return dependency


READ, SUBMIT, ADMIN = SCOPES
Reader = Depends(need(READ))  # for `dependencies=[Reader]`: a route any read token may call
Submitter = Annotated[Caller, Depends(need(SUBMIT))]
Admin = Annotated[Caller, Depends(need(ADMIN))]
