"""The documentation pages of the running service, loaded in headless Chromium with every host
but 127.0.0.1 unresolvable (as in a cluster without internet access): the AsyncAPI page shows
the routing keys, the OpenAPI page shows the admin routes — rendered by their scripts, which
the service serves itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install -y chromium)"
)


def render(url: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (or a screenshot of it)."""
    assert CHROMIUM is not None
    output = [f"--screenshot={screenshot}", "--window-size=1280,1600"] if screenshot else ["--dump-dom"]
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Nothing but the service can be reached: a page needing a CDN would stay empty.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        *output,
        url,
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    # Swagger UI breaks long paths with <wbr> and zero-width spaces.
    return re.sub(r"<wbr>", "", done.stdout.decode()).replace("\u200b", "")


async def test_both_pages_render_without_internet(service_process: Any, tmp_path: Path) -> None:
    service = service_process(admin_token="docs-test-token")
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        for path in ("/docs/asyncapi", "/docs/openapi"):
            page = await client.get(path)
            assert page.status_code == 200
            assert "http" not in re.sub(r"<!DOCTYPE[^>]*>", "", page.text).lower()  # no absolute URL at all
            assert "default-src 'none'" in page.headers["content-security-policy"]
        assert (await client.get("/docs/asyncapi.json")).json()["asyncapi"].startswith("3.")

    events = render(f"{service.url}/docs/asyncapi", tmp_path / "asyncapi")
    assert "could not be loaded" not in events
    for key in ("order.stock-confirmed", "order.cancelled", "payment.succeeded", "payment.failed", "payment.refunded"):
        assert key in events, key

    api = render(f"{service.url}/docs/openapi", tmp_path / "openapi")
    for route in (
        "/payments/{orderId}",
        "/payments/by-id/{paymentId}",
        "/payments/{orderId}/refund",
        "/admin/dlq/replay",
    ):
        assert route in api, route
    assert "Authorize" in api  # the bearer scheme

    render(f"{service.url}/docs/asyncapi", tmp_path / "shot", screenshot=tmp_path / "asyncapi.png")
    assert (tmp_path / "asyncapi.png").stat().st_size > 20_000  # more than a blank page


async def test_the_service_names_no_server_and_redirects_nowhere(service_process: Any) -> None:
    service = service_process()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        for path in ("/healthz", "/payments/1", "/docs/openapi", "/nope"):
            assert "server" not in (await client.get(path)).headers, path
        slash = await client.get("/healthz/", headers={"Host": "evil.example"})
        assert slash.status_code == 404
        assert "location" not in slash.headers
