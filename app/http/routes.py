"""The HTTP surface in one ASGI app: probes, metrics, documentation pages and the admin API,
behind the edge (rate limit, authentication, headers, failures)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

import app as package
from app.http.api import PaymentReader, Refunds, admin_api
from app.http.auth import Authenticator
from app.http.docs import docs_routes
from app.http.edge import Edge, error, failure_response
from app.http.probes import Health, MetricsText, probe_routes
from app.http.ratelimit import TokenBuckets
from app.messaging.dlq import DlqOperations

__all__ = ["Health", "create_http_app"]

DEFAULT_RATE_LIMIT = 20.0


def create_http_app(
    *,
    health: Health,
    metrics: Any,
    repository: Callable[[], PaymentReader],
    auth: Authenticator,
    dlq: DlqOperations | None = None,
    refunds: Refunds | None = None,
    settings: Any = None,
    asyncapi: Callable[[], Any] | None = None,
) -> ASGIApp:
    """`metrics` has the Prometheus `registry`; `repository()` gives the payment reader once
    the service has started; `asyncapi()` gives the AsyncAPI document (a JSON-able dict);
    `settings.admin_rate_limit` is the per-client rate on the admin routes."""
    rate = float(getattr(settings, "admin_rate_limit", None) or DEFAULT_RATE_LIMIT)
    api = admin_api(repository=repository, dlq=dlq, refunds=refunds, version=service_version())
    routes = [*probe_routes(health, MetricsText(metrics.registry)), *docs_routes(asyncapi)]
    # The admin API's /openapi.json is public like the pages that render it.
    routes.append(Mount("", app=api))
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: lambda request, exc: error(404, "not found"),
            405: lambda request, exc: error(405, "method not allowed"),
            Exception: lambda request, exc: failure_response(exc),
        },
    )
    app.router.redirect_slashes = False  # never a redirect (a trailing-slash one would be built from Host)
    return Edge(app, auth=auth, limiter=TokenBuckets(rate, 2 * rate))


def service_version() -> str:
    found = getattr(package, "__version__", None)
    if found:
        return str(found)
    try:
        return version("foodies-payment")
    except PackageNotFoundError:
        return "0+unknown"
