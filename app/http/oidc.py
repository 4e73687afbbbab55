"""OpenID Connect access tokens for the admin routes: the issuer's signing keys (JWKS) and
the checks of a JWT. Loaded only when `AUTH_ISSUER` is set (see `auth.Authenticator`), so a
service without OIDC never imports PyJWT and cryptography."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from loguru import logger

from app.http.auth import ALLOW, INVALID, AuthDecision

ADMIN_ROLE = "admin"
ALLOWED_ALGORITHMS = ("RS256", "ES256")


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
