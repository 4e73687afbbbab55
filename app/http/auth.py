"""Authentication of the admin routes (`/payments*`, `/admin*`).

Two ways in, either or both configured:

- static bearer tokens (`ADMIN_TOKEN`, comma-separated so a token can be rotated without
  downtime), compared in constant time;
- OpenID Connect access tokens (`AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_URL`): a JWT signed
  by one of the issuer's published keys (RS256/ES256), with issuer, audience, expiry and
  not-before checked; the Keycloak realm role `admin` is required (403 without it). That
  part lives in `oidc.py` and is imported only when `AUTH_ISSUER` is set.

`Authenticator` is what the HTTP guard calls. Neither configured → every request is allowed
(the app logs a warning at start). Tokens are never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.http.oidc import JwtAuth


@dataclass(frozen=True, slots=True)
class AuthDecision:
    allowed: bool
    status: int = 200  # 401, 403 (or 503 when the signing keys cannot be fetched) when not allowed
    error: str = ""


ALLOW = AuthDecision(True)
MISSING = AuthDecision(False, 401, "missing bearer token")
INVALID = AuthDecision(False, 401, "invalid token")


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class StaticTokenAuth:
    """`Authorization: Bearer <token>` against one or more configured tokens (rotation)."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @property
    def count(self) -> int:
        return len(self._tokens)

    def matches(self, token: str) -> bool:
        given = token.encode()
        # Compare against every token so timing does not reveal which one nearly matched.
        matched = False
        for candidate in self._tokens:
            matched |= hmac.compare_digest(given, candidate)
        return matched

    def check(self, authorization: str | None) -> AuthDecision:
        if not self._tokens:
            return ALLOW
        token = bearer_token(authorization)
        if token is None:
            return MISSING
        return ALLOW if self.matches(token) else INVALID


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Authenticator:
    """What the HTTP guard asks: static tokens first (cheap), then a JWT when configured."""

    def __init__(self, static: StaticTokenAuth, oidc: JwtAuth | None = None) -> None:
        self.static = static
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        oidc = None
        if settings.auth_issuer:
            # PyJWT and cryptography are loaded only when OpenID Connect is configured.
            from app.http.oidc import JwtAuth

            oidc = JwtAuth.from_settings(settings.auth_issuer, settings.auth_audience, settings.auth_jwks_url)
        return cls(StaticTokenAuth(settings.admin_tokens), oidc)

    @property
    def enabled(self) -> bool:
        return self.static.enabled or self.oidc is not None

    def describe(self) -> dict[str, Any]:
        """For the start-up log line: which methods are on, never a token."""
        return {
            "static_tokens": self.static.count,
            "oidc_issuer": self.oidc.issuer if self.oidc else None,
            "jwks_url": self.oidc.jwks.url if self.oidc else None,
        }

    async def check(self, authorization: str | None) -> AuthDecision:
        if not self.enabled:
            return ALLOW
        token = bearer_token(authorization)
        if token is None:
            return MISSING
        if self.static.enabled and self.static.matches(token):
            return ALLOW
        if self.oidc is not None and looks_like_jwt(token):
            return await self.oidc.check_token(token)
        return INVALID
