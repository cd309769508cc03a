"""Keycloak's bearer tokens for the HTTP API (docs/contract.md "HTTP API"): a JWT is accepted
when the realm's published keys (its JWKS) verify its signature, it has not expired, its issuer
is the realm (REPOVAULT_OIDC_ISSUER) and its audience one of REPOVAULT_OIDC_AUDIENCE. Its scope
comes from the realm roles it carries (`realm_access.roles`), the highest one held counting:
people hold `repovault-viewer` (read) or `repovault-operator` (admin, which covers submit and
read); `repovault-read`, `repovault-submit`, `repovault-admin` name one scope each, for service
accounts such as repovault-scripts' (submit) and for accounts given them before the two roles
for people existed.

The keys are fetched from REPOVAULT_OIDC_JWKS_URL (default: the issuer's
/protocol/openid-connect/certs) and kept for five minutes; a token signed with a key not among
them makes one new fetch, so a rotated realm key is picked up at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from repovault_pipeline.core.access.tokens import SCOPES

# Realm role -> API scope. Scopes nest (core/access/tokens.py), so operator's admin covers all.
ROLE_SCOPES = {
    "repovault-viewer": "read",
    "repovault-operator": "admin",
    **{f"repovault-{scope}": scope for scope in SCOPES},
}
# Asymmetric algorithms only: a key from the JWKS must never be taken as an HMAC secret.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
LEEWAY_S = 30  # clocks of Keycloak and the API may differ a little
JWKS_CACHE_S = 300


class RefusedToken(Exception):
    """The token cannot be used; the message says why in one line."""


class KeysUnavailable(Exception):
    """The realm's keys could not be fetched: nothing can be said about the token."""


@dataclass(frozen=True)
class OidcIdentity:
    subject: str  # `preferred_username`, else `sub`
    scope: str | None  # None: the token holds none of the RepoVault roles


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class OidcVerifier:
    def __init__(
        self, issuer: str, jwks_url: str | None, audiences: tuple[str, ...], timeout_s: float
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url or f"{issuer}/protocol/openid-connect/certs"
        self.audiences = list(audiences)
        self.keys = PyJWKClient(
            self.jwks_url, cache_keys=True, lifespan=JWKS_CACHE_S, timeout=int(timeout_s)
        )

    def identify(self, token: str) -> OidcIdentity:
        try:
            key = self.keys.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailable(
                f"cannot fetch the realm's keys from {self.jwks_url}: {exc}"
            ) from None
        except PyJWKClientError:
            raise RefusedToken(
                "the token is signed with a key the realm does not publish"
            ) from None
        except jwt.DecodeError:
            raise RefusedToken("the bearer token is not a readable JWT") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise RefusedToken("the token has expired; get a new one from Keycloak") from None
        except jwt.InvalidAudienceError:
            raise RefusedToken(
                f"the token is not meant for this API (audience must be one of "
                f"{', '.join(self.audiences)})"
            ) from None
        except jwt.InvalidIssuerError:
            raise RefusedToken(f"the token was not issued by {self.issuer}") from None
        except jwt.InvalidTokenError as exc:
            raise RefusedToken(f"the token is not valid: {str(exc)[:120]}") from None
        subject = str(claims.get("preferred_username") or claims["sub"])
        return OidcIdentity(subject[:100], scope_of(claims))


def scope_of(claims: dict[str, Any]) -> str | None:
    """The highest scope the token's realm roles give; None when it holds none of ROLE_SCOPES."""
    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
    if not isinstance(roles, list):
        return None
    held = {ROLE_SCOPES[r] for r in roles if isinstance(r, str) and r in ROLE_SCOPES}
    return max(held, key=SCOPES.index, default=None)
