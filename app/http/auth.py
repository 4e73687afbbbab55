"""Authentication of the admin routes (`/payments*`, `/admin*`).

Two ways in, either or both configured:

- static bearer tokens (`ADMIN_TOKEN`, comma-separated so a token can be rotated without
  downtime), compared in constant time;
- OpenID Connect access tokens (`AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_URL`): a JWT signed
  by one of the issuer's published keys (RS256/ES256), with issuer, audience, expiry and
  not-before checked; the Keycloak realm role `admin` is required (403 without it).

`Authenticator` is what the HTTP guard calls. Neither configured → every request is allowed
(the app logs a warning at start). Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from loguru import logger

ADMIN_ROLE = "admin"
ALLOWED_ALGORITHMS = ("RS256", "ES256")


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


class SigningKeysUnavailable(Exception):
    """The issuer's JWKS could not be fetched and no keys are cached."""


class JwksCache:
    """The issuer's signing keys, fetched with PyJWT's JWKS client in a worker thread (it is
    synchronous; the event loop never waits on the network).

    - The key set is kept for `ttl_s` and refetched lazily on the first request after that.
    - A token whose `kid` is not in the set triggers one refetch (key rotation). When that
      refetch does not know the `kid` either, further unknown ids do not refetch for
      `unknown_kid_cooldown_s`, so random `kid`s cannot make us hammer the issuer.
    - Concurrent requests share one fetch. A failed fetch keeps the keys already known and is
      not retried for `retry_s`.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 300.0,
        unknown_kid_cooldown_s: float = 10.0,
        retry_s: float = 5.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        self._ttl = ttl_s
        self._cooldown = unknown_kid_cooldown_s
        self._retry = retry_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._single: PyJWK | None = None  # the only key, for tokens without a `kid`
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._missed_at: float | None = None  # last refetch that did not know the asked `kid`
        self._generation = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _due(self) -> bool:
        now = self._clock()
        if self._attempted_at is None:
            return True
        last_failed = self._fetched_at is None or self._attempted_at != self._fetched_at
        if last_failed and now - self._attempted_at < self._retry:
            return False  # the last attempt failed moments ago
        return self._fetched_at is None or now - self._fetched_at > self._ttl

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key for `kid`, or None; raises SigningKeysUnavailable when no keys are known."""
        if self._due():
            await self._refresh(self._generation)
        if self._fetched_at is None:
            raise SigningKeysUnavailable(self.url)
        found = self._lookup(kid)
        if found is not None or kid is None:
            return found
        if self._missed_at is not None and self._clock() - self._missed_at < self._cooldown:
            return None
        await self._refresh(self._generation)
        found = self._lookup(kid)
        if found is None:
            self._missed_at = self._clock()
        return found

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return self._single
        return self._keys.get(kid)

    async def _refresh(self, seen_generation: int) -> None:
        async with self._lock:
            if self._generation != seen_generation:
                return  # another request fetched while this one waited
            self._generation += 1
            self.fetches += 1
            started = self._clock()
            try:
                data = await asyncio.to_thread(self._client.fetch_data)
                keys = [
                    k
                    for k in PyJWKSet.from_dict(data).keys
                    if k.public_key_use in ("sig", None) and k.algorithm_name in ALLOWED_ALGORITHMS
                ]
            except Exception as error:  # noqa: BLE001 - keep the known keys; say why
                self._attempted_at = started
                logger.warning("could not fetch the signing keys from {url}: {error}", url=self.url, error=error)
                return
            self._keys = {k.key_id: k for k in keys if k.key_id}
            self._single = keys[0] if len(keys) == 1 else None
            self._fetched_at = self._attempted_at = started
            logger.debug("fetched {n} signing keys", n=len(self._keys), url=self.url)


class JwtAuth:
    """OpenID Connect access tokens (Keycloak): signature by the issuer's keys, `iss`, `aud`,
    `exp` and `nbf` (with `leeway_s` of clock skew), and the `admin` realm role."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks: JwksCache,
        *,
        leeway_s: float = 30.0,
        role: str = ADMIN_ROLE,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.leeway_s = leeway_s
        self.role = role

    @classmethod
    def from_settings(cls, issuer: str, audience: str, jwks_url: str | None) -> JwtAuth:
        return cls(issuer, audience, JwksCache(jwks_url or default_jwks_url(issuer)))

    async def check_token(self, token: str) -> AuthDecision:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return INVALID
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:  # `none`, HS256 with a public key, …
            return AuthDecision(False, 401, "token algorithm not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return INVALID
        try:
            key = await self.jwks.key(kid)
        except SigningKeysUnavailable:
            return AuthDecision(False, 503, "signing keys unavailable")
        if key is None:
            return AuthDecision(False, 401, "unknown signing key")
        if key.algorithm_name != algorithm:
            return AuthDecision(False, 401, "token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return AuthDecision(False, 401, "token expired")
        except jwt.ImmatureSignatureError:
            return AuthDecision(False, 401, "token not yet valid")
        except jwt.InvalidAudienceError:
            return AuthDecision(False, 401, "token audience not accepted")
        except jwt.InvalidIssuerError:
            return AuthDecision(False, 401, "token issuer not accepted")
        except jwt.PyJWTError:
            return INVALID
        if self.role not in realm_roles(claims):
            return AuthDecision(False, 403, f"the {self.role} role is required")
        return ALLOW


def realm_roles(claims: dict[str, Any]) -> set[str]:
    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
    return {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()


def default_jwks_url(issuer: str) -> str:
    """Keycloak publishes a realm's keys under the issuer at this path."""
    return issuer.rstrip("/") + "/protocol/openid-connect/certs"


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
