"""The HTTP edge against the real PostgreSQL and a real HTTP server (uvicorn): any buyerId is a
200 or a 400 (never a 500), a database error is logged without the statement's parameters, an
unreachable database is a 503, a raw request with a foreign Host gets no redirect, and access
lines carry no query string."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from app.observability.logs import ACCESS_LOGGER, _InterceptHandler
from app.persistence.repository import PaymentRepository, make_engine
from tests.conftest import make_settings
from tests.http_fakes import client_of, http_app
from tests.integration.test_openapi_fuzz import Server, lazy_repository
from tests.support import Servers, free_port


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + repr(m.record["extra"])), level="DEBUG")
    yield lines
    logger.remove(sink)


@pytest.fixture(scope="module")
def database_url(servers: Servers, database: str) -> str:
    return make_settings(servers).sqlalchemy_url()


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    with Server(http_app(repository=lazy_repository(database_url), rate=100_000)) as running:
        yield running


def repository_on(url: str) -> Any:
    made: list[PaymentRepository] = []

    def repository() -> PaymentRepository:
        if not made:
            made.append(PaymentRepository(make_engine(url, pool_size=1)))
        return made[0]

    return repository


def raw_get(port: int, target: str, host: str = "evil.example") -> str:
    """A request sent byte by byte, as a client that does not normalise anything would."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


@given(buyer=st.text(max_size=300))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_buyer_id_is_answered_without_a_server_error(server: Server, buyer: str) -> None:
    import httpx

    response = httpx.get(f"{server.url}/payments", params={"buyerId": buyer, "limit": 1}, timeout=10)
    assert response.status_code in (200, 400), (repr(buyer[:40]), response.text[:200])


async def test_a_database_error_is_logged_without_its_parameters(servers: Servers, logs: list[str]) -> None:
    secret = f"buyer-{uuid.uuid4().hex}-4111111111111111"
    # A database without the payments table: the statement fails inside PostgreSQL.
    url = make_settings(servers).sqlalchemy_url().rsplit("/", 1)[0] + "/postgres"
    async with client_of(http_app(repository=repository_on(url))) as client:
        response = await client.get("/payments", params={"buyerId": secret})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "status": 500}
    text = "\n".join(logs)
    assert "GET /payments failed with 500" in text
    assert "ProgrammingError" in text  # the kind of failure is there…
    assert secret not in text  # …the parameters are not
    assert "SELECT" not in text


async def test_an_unreachable_database_is_a_503(logs: list[str]) -> None:
    url = f"postgresql+asyncpg://root@127.0.0.1:{free_port()}/payments"
    async with client_of(http_app(repository=repository_on(url))) as client:
        response = await client.get("/payments/42")
    assert response.status_code == 503
    assert response.json()["status"] == 503
    assert "failed with 503" in "\n".join(logs)


def test_no_redirect_whatever_the_host(server: Server) -> None:
    for target in ("/healthz/", "/payments/", "/docs/", "/docs/openapi/", "//evil.example/"):
        answer = raw_get(server.port, target)
        status_line, _, rest = answer.partition("\r\n")
        assert status_line.split(" ")[1] == "404", (target, status_line)
        headers = rest.split("\r\n\r\n")[0].lower()
        assert "location:" not in headers
        assert "evil.example" not in answer


def test_malformed_requests_on_the_wire_are_400(server: Server) -> None:
    for target in ("/payments/" + "9" * 5000, "/payments/%00", "/payments?buyerId=%00", "/payments?limit=%ff"):
        status_line = raw_get(server.port, target, host="127.0.0.1").partition("\r\n")[0]
        assert status_line.split(" ")[1] == "400", (target[:40], status_line)


def test_access_lines_leave_the_query_string_out(server: Server, logs: list[str]) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    access = logging.getLogger(ACCESS_LOGGER)
    handler, before = _InterceptHandler(), (access.handlers, access.level, access.propagate)
    access.handlers, access.propagate = [handler], False
    access.setLevel(logging.INFO)
    try:
        raw_get(server.port, f"/payments?token={token}&limit=1", host="127.0.0.1")
        raw_get(server.port, "/payments/1%0aforged", host="127.0.0.1")
    finally:
        access.handlers, access.level, access.propagate = before
    lines = [line for line in logs if "HTTP/1.1" in line]
    assert any('"GET /payments HTTP/1.1" 400' in line for line in lines), lines  # token is no parameter of ours
    assert all(token not in line for line in logs)
    assert all("\n" not in line.split("{")[0].strip() for line in lines)
