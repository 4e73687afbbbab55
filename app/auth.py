"""Authentication of the admin routes (`/payments*`, `/admin*`)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthDecision:
    allowed: bool
    status: int = 200  # 401 or 403 when not allowed
    error: str = ""


ALLOW = AuthDecision(True)


class StaticTokenAuth:
    """`Authorization: Bearer <token>` against one or more configured tokens (rotation)."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None) -> AuthDecision:
        if not self._tokens:
            return ALLOW
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return AuthDecision(False, 401, "missing bearer token")
        given = credentials.strip().encode()
        # Compare against every token so timing does not reveal which one nearly matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return ALLOW if matched else AuthDecision(False, 401, "invalid token")
