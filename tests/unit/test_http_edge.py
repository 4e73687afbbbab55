"""The HTTP edge without servers: malformed input is a 400 (never a 500), no redirects, no
`server` header, `no-store` on admin answers, per-client rate limits, failures answered and
logged without their messages, and access lines without query strings."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from loguru import logger

from app.http.edge import Edge
from app.http.ratelimit import TokenBuckets
from app.observability.logs import access_line
from tests.http_fakes import FakeReader, client_of, http_app, payment

MALFORMED = [
    "/payments/" + "9" * 5000,
    "/payments/%00",
    "/payments/1%00",
    "/payments/0",
    "/payments/-1",
    "/payments/1.0",
    "/payments/+1",
    "/payments/%201",
    "/payments/1e3",
    "/payments/٤٢",  # Arabic-Indic digits are digits to str.isdigit(), not to us
    f"/payments/{2**63}",
    "/payments/by-id/" + "9" * 5000,
    "/payments/by-id/%00",
    "/payments?buyerId=%00",
    "/payments?buyerId=a%0Ab",
    "/payments?buyerId=",
    "/payments?buyerId=" + "x" * 256,
    "/payments?status=paid",
    "/payments?status=%00",
    "/payments?limit=0",
    "/payments?limit=101",
    "/payments?limit=" + "9" * 5000,
    "/payments?limit=1.5",
    "/payments?limit=%00",
    "/payments?offset=-1",
    "/payments?offset=1000001",
    "/payments?offset=x",
    "/payments?page=2",
    "/payments?limit=1&limit=2",
    "/payments/42?x=1",
    "/admin/dlq?limit=0",
    "/admin/dlq?limit=201",
    "/admin/dlq?queue=%00",
    "/admin/dlq?queue=another",
    "/healthz/%00",
]


@pytest.fixture
def logs() -> Any:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + repr(m.record["extra"])), level="DEBUG")
    yield lines
    logger.remove(sink)


async def test_every_malformed_id_or_parameter_is_a_400(logs: list[str]) -> None:
    from tests.http_fakes import FakeLots

    async with client_of(http_app(dlq=FakeLots())) as client:
        for path in MALFORMED:
            response = await client.get(path)
            assert response.status_code == 400, (path[:60], response.text)
            body = response.json()
            assert set(body) == {"error", "status"}
            assert body["status"] == 400
            assert body["error"]
            assert len(body["error"]) < 200
            assert "\x00" not in body["error"]
            assert "99999" not in body["error"]
        assert "paymentId" in (await client.get("/payments/by-id/x")).json()["error"]
        assert "orderId" in (await client.get("/payments/x")).json()["error"]
    assert not [line for line in logs if "failed with" in line]


async def test_well_formed_requests_still_answer() -> None:
    reader = FakeReader({42: payment(42)})
    async with client_of(http_app(reader=reader)) as client:
        record = (await client.get("/payments/42")).json()
        assert record["orderId"] == 42
        assert record["amount"] == "49.99"
        assert record["createdAt"] == "2024-01-15T10:30:00.000Z"
        assert record["refundId"] is None
        assert record["refundedAt"] is None
        assert (await client.get("/payments/by-id/1042")).json() == record
        assert (await client.get("/payments/43")).status_code == 404
        page = (
            await client.get("/payments", params={"buyerId": "b", "status": "FAILED", "limit": 7, "offset": 3})
        ).json()
        assert page["limit"] == 7
        assert page["offset"] == 3
        assert page["items"] == [record]
        assert reader.calls[-1] == {"buyer_id": "b", "status": "FAILED", "limit": 7, "offset": 3}
        assert (await client.get("/payments/007")).status_code == 404  # leading zeros are still a number


async def test_no_redirects_not_even_from_the_host_header() -> None:
    async with client_of(http_app()) as client:
        for path in ("/healthz/", "/payments/", "/payments/42/", "/metrics/", "/docs/openapi/", "/admin/dlq/"):
            response = await client.get(path, headers={"Host": "evil.example"})
            assert response.status_code == 404, path
            assert "location" not in response.headers
            assert "evil" not in response.text


async def test_admin_answers_are_no_store_and_nothing_names_the_server() -> None:
    async with client_of(http_app(tokens=("t0ken",))) as client:
        for path in ("/payments/42", "/payments/43", "/payments/x", "/payments?limit=1", "/admin/dlq"):
            for headers in ({}, {"Authorization": "Bearer t0ken"}):
                response = await client.get(path, headers=headers)
                assert response.headers["cache-control"] == "no-store", (path, response.status_code)
                assert "server" not in response.headers
        for path in ("/healthz", "/metrics", "/openapi.json", "/docs", "/docs/openapi", "/docs/asyncapi"):
            response = await client.get(path)
            assert response.status_code == 200
            assert "server" not in response.headers
            assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_server_header_from_inside_is_dropped() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"server", b"uvicorn"), (b"cache-control", b"max-age=3600")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    from app.http.auth import Authenticator, StaticTokenAuth

    app = Edge(inner, auth=Authenticator(StaticTokenAuth(())), limiter=None)
    async with client_of(app) as client:
        admin = await client.get("/payments/1")
        assert "server" not in admin.headers
        assert admin.headers["cache-control"] == "no-store"
        other = await client.get("/healthz")
        assert "server" not in other.headers
        assert other.headers["cache-control"] == "max-age=3600"


async def test_rate_limit_per_client_with_retry_after() -> None:
    app = http_app(rate=5)  # burst 10
    async with client_of(app, ("10.0.0.1", 1)) as first, client_of(app, ("10.0.0.2", 1)) as second:
        codes = [(await first.get("/payments/42")).status_code for _ in range(10)]
        assert codes == [200] * 10  # the burst
        # Tokens refill at 5/s: on a slow machine one or two more may pass before the refusal.
        for _ in range(5):
            if (await first.get("/payments/42")).status_code == 429:
                break
        else:
            raise AssertionError("no 429 after the burst")
        refused = await first.get("/admin/dlq")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json() == {"error": "too many requests", "status": 429}
        assert refused.headers["cache-control"] == "no-store"
        assert (await second.get("/payments/42")).status_code == 200  # another client has its own bucket
        for _ in range(20):  # probes, metrics and docs are never limited
            assert (await first.get("/healthz/readiness")).status_code == 200


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=4, max_clients=100, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0
    for i in range(10_000):  # a flood of addresses
        buckets.take(f"10.{i}")
    assert len(buckets) <= 100
    now[0] += 10  # everyone idle long enough to be full again: nothing is kept
    buckets.take("b")
    assert len(buckets) == 1


async def test_a_failure_is_a_500_logged_without_its_message(logs: list[str]) -> None:
    secret = "buyer-4111111111111111"
    reader = FakeReader(failure=RuntimeError(f"[SQL: SELECT ...] [parameters: ('{secret}',)]"))
    async with client_of(http_app(reader=reader)) as client:
        response = await client.get("/payments", params={"buyerId": secret})
        assert response.status_code == 500
        assert response.json() == {"error": "internal error", "status": 500}
        assert response.headers["cache-control"] == "no-store"
    text = "\n".join(logs)
    assert "GET /payments failed with 500" in text
    assert "RuntimeError" in text
    assert secret not in text
    assert "parameters" not in text


async def test_an_unreachable_database_is_a_503(logs: list[str]) -> None:
    reader = FakeReader(failure=ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)"))
    async with client_of(http_app(reader=reader)) as client:
        response = await client.get("/payments")
        assert response.status_code == 503
        assert response.json()["status"] == 503
    assert "10.1.2.3" not in "\n".join(logs)


def test_access_lines_carry_no_query_string() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.1:5000", "GET", "/payments?token=s3cr3t&buyerId=x", "1.1", 200),
        None,
    )
    assert access_line(record) == '10.0.0.1:5000 - "GET /payments HTTP/1.1" 200'
    record.args = ("10.0.0.1:5000", "GET", "/payments/1\nINFO forged line", "1.1", 400)
    assert "\n" not in access_line(record)
