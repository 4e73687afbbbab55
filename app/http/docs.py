"""The documentation pages: /docs/asyncapi (the events) and /docs/openapi (the admin API),
linked from /docs.

Everything a browser loads comes from this service — the pages, their scripts and styles
(vendored under static/, see static/README.md) and the documents — so they render in a
cluster without internet access. A Content-Security-Policy says the same to the browser.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.http.edge import error

STATIC = files("app.http") / "static"
# The AsyncAPI parser compiles JSON schemas to functions at run time, hence 'unsafe-eval'.
_CSP = (
    "default-src 'none'; script-src 'self'{eval}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page(name: str, csp: str) -> Callable[[Request], Any]:
    body = (STATIC / name).read_bytes()

    async def page(_: Request) -> Response:
        return Response(body, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": csp})

    return page


def docs_routes(asyncapi: Callable[[], Any] | None) -> list[BaseRoute]:
    """`asyncapi` returns the AsyncAPI document (a JSON-able dict); it is asked once, on first use."""
    document: list[bytes] = []

    async def asyncapi_json(_: Request) -> Response:
        if asyncapi is None:
            return error(404, "no AsyncAPI document")
        if not document:
            document.append(json.dumps(asyncapi(), ensure_ascii=False).encode())
        return Response(document[0], media_type="application/json")

    return [
        Route("/docs", _page("index.html", _CSP.format(eval="")), methods=["GET"]),
        Route("/docs/asyncapi", _page("asyncapi.html", _CSP.format(eval=" 'unsafe-eval'")), methods=["GET"]),
        Route("/docs/asyncapi.json", asyncapi_json, methods=["GET"]),
        Route("/docs/openapi", _page("openapi.html", _CSP.format(eval="")), methods=["GET"]),
        Mount("/docs/static", app=StaticFiles(packages=[("app.http", "static")]), name="docs-static"),
    ]
