"""The HTTP edge: one ASGI layer in front of every route.

In order, for each request:
- a path with control characters (a NUL byte, `%00`, a newline) is a 400 before routing, a
  declared body over 16 KiB a 413;
- `/payments*` and `/admin*` are rate-limited per client address (429 with Retry-After), then
  authenticated (401/403/503) — both before routing, so unknown admin paths reveal nothing;
- responses lose any `server` header; admin answers get `Cache-Control: no-store`; every
  answer gets `X-Content-Type-Options: nosniff`;
- an exception becomes a JSON 500 (or 503 when a backing service is unreachable) and one
  error line naming the exception types and code locations only — never their messages, which
  for a database error carry the statement's parameters.
"""

from __future__ import annotations

import re
import sys

import asyncpg
from loguru import logger
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.auth import MISSING, AuthDecision, Authenticator
from app.http.ratelimit import TokenBuckets, retry_after
from app.observability.logs import failure_summary

ADMIN_PREFIXES = ("/payments", "/admin")
MAX_BODY_BYTES = 16 * 1024  # the largest body the service takes is a 500-character refund reason
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DROPPED = {b"server"}
_ADMIN_DROPPED = {b"server", b"cache-control"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of the service: {"error": ..., "status": ...}."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def auth_failure(decision: AuthDecision) -> JSONResponse:
    """401 (with a WWW-Authenticate challenge, RFC 6750), 403 or 503, as a JSON body."""
    challenge = 'Bearer realm="payment-service"'
    if decision.status == 401 and decision is not MISSING:
        challenge += ', error="invalid_token"'
    elif decision.status == 403:
        challenge += ', error="insufficient_scope"'
    headers = {"WWW-Authenticate": challenge} if decision.status in (401, 403) else None
    return error(decision.status, decision.error, headers=headers)


def failure_response(failure: BaseException) -> JSONResponse:
    if backend_unavailable(failure):
        return error(503, "a backing service is unavailable; try again")
    return error(500, "internal error")


def backend_unavailable(failure: BaseException) -> bool:
    """Whether a failure means the database (or another backing service) could not be reached."""
    seen: BaseException | None = failure
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
            return True
        if _sqlalchemy_unavailable(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sqlalchemy_unavailable(failure: BaseException) -> bool:
    # SQLAlchemy serves only the admin queries and is imported with the first of them: an
    # exception of its kinds can exist only if it is loaded, so look it up, never import it here.
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is None:
        return False
    if isinstance(failure, exc.TimeoutError):
        return True
    return isinstance(failure, exc.DBAPIError) and bool(failure.connection_invalidated)


def is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES)


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        limiter: TokenBuckets | None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        admin = is_admin(path)
        started = False

        async def send_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                dropped = _ADMIN_DROPPED if admin else _DROPPED
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dropped]
                headers.append((b"x-content-type-options", b"nosniff"))
                if admin:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = await self._refusal(scope, path, admin)
            if refusal is not None:
                await refusal(scope, receive, send_headers)
                return
            await self.app(scope, receive, send_headers)
        except Exception as failure:  # noqa: BLE001 - the edge answers and logs every failure itself
            status = 503 if backend_unavailable(failure) else 500
            logger.error(
                "{method} {path} failed with {status}",
                method=scope.get("method"),
                path=_CONTROL.sub("?", path),
                status=status,
                **failure_summary(failure),
            )
            if not started:
                await failure_response(failure)(scope, receive, send_headers)

    async def _refusal(self, scope: Scope, path: str, admin: bool) -> JSONResponse | None:
        if _CONTROL.search(path):
            return error(400, "the path contains control characters")
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or len(length) > 12 or int(length) > MAX_BODY_BYTES):
            # A chunked body is still cut at the same size by the admin API itself.
            return error(413, "request body too large")
        if not admin:
            return None
        if self.limiter is not None:
            client = scope.get("client")
            wait = self.limiter.take(client[0] if client else "")
            if wait > 0:
                return error(429, "too many requests", headers={"Retry-After": retry_after(wait)})
        decision = await self.auth.check(_header(scope, b"authorization"))
        return None if decision.allowed else auth_failure(decision)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1") or None
    return None
