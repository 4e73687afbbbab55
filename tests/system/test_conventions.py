"""Conventions operators rely on, checked on the real service: a /metrics scrape that passes
`promtool check metrics` (Prometheus' own linter) with the process collectors, no `server`
header, and the package's version in both API documents."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from importlib.metadata import version
from typing import Any

import httpx
import pytest

PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


def _promtool_check(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, timeout=60)


async def _scrape(service_process: Any) -> httpx.Response:
    service = service_process()
    await service.wait_ready()
    async with httpx.AsyncClient(timeout=10.0) as client:
        # One request first, so that the HTTP metrics have children to show as well.
        await client.get(f"{service.url}/healthz/readiness")
        return await client.get(f"{service.url}/metrics")


@needs_promtool
async def test_live_scrape_passes_promtool_check_metrics(service_process: Any) -> None:
    response = await _scrape(service_process)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    # The process and platform collectors: memory, CPU, file descriptors, interpreter, GC.
    for series in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                   "python_info", "python_gc_collections_total", "payment_in_flight"):  # fmt: skip
        assert f"\n{series}" in response.text, f"{series} missing from /metrics"
    # No `server` header naming the stack.
    assert "server" not in response.headers

    checked = await asyncio.to_thread(_promtool_check, response.content)
    complaints = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, f"promtool check metrics:\n{complaints}"
    assert not complaints.strip(), f"promtool check metrics:\n{complaints}"


@needs_promtool
def test_promtool_catches_a_bad_exposition() -> None:
    """The check above can fail: promtool flags a counter without the _total suffix."""
    checked = _promtool_check(b"# HELP payment_bad Bad.\n# TYPE payment_bad counter\npayment_bad 1\n")
    assert (checked.stdout + checked.stderr).strip()


async def test_both_api_documents_carry_the_package_version(service_process: Any) -> None:
    service = service_process()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10.0) as client:
        openapi = (await client.get("/openapi.json")).json()
        asyncapi = (await client.get("/docs/asyncapi.json")).json()
    assert openapi["info"]["version"] == version("foodies-payment")
    assert asyncapi["info"]["version"] == version("foodies-payment")
