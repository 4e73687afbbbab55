"""The refund route and the parking-lot routes against in-memory stand-ins: each service-layer
outcome has its status, replay parameters are honoured or refused (never ignored), and the
OpenAPI document describes every admin route."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.http_fakes import FakeLots, FakeRefunds, Outcome, client_of, http_app

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.NOT_FOUND, 404),
        (Outcome.NOT_REFUNDABLE, 409),
        (Outcome.DECLINED, 502),
        (Outcome.UNAVAILABLE, 503),
    ],
)
async def test_refund_outcomes_are_statuses(outcome: Outcome, status: int) -> None:
    refunds = FakeRefunds(outcome, "why it did not happen")
    async with client_of(http_app(refunds=refunds)) as client:
        response = await client.post("/payments/42/refund")
    assert response.status_code == status
    assert response.json() == {"error": "why it did not happen", "status": status}
    assert response.headers["cache-control"] == "no-store"


async def test_refund_returns_the_refunded_record_and_passes_the_reason() -> None:
    refunds = FakeRefunds()
    async with client_of(http_app(refunds=refunds)) as client:
        response = await client.post("/payments/42/refund", json={"reason": "customer asked"})
        assert response.status_code == 200
        record = response.json()
        assert record["status"] == "REFUNDED"
        assert record["refundId"] == "re_1"
        assert record["refundedAt"].endswith("Z")
        assert (await client.post("/payments/43/refund")).status_code == 200
        assert (await client.post("/payments/44/refund", json={})).status_code == 200
        assert (await client.post("/payments/45/refund", content=b"null", headers=JSON)).status_code == 200
    assert refunds.calls == [(42, "customer asked"), (43, None), (44, None), (45, None)]


async def test_refund_input_is_checked_before_anything_is_refunded() -> None:
    refunds = FakeRefunds()
    bad = [
        ("/payments/0/refund", {}),
        ("/payments/" + "9" * 5000 + "/refund", {}),
        ("/payments/42/refund", {"json": {"reason": "x" * 501}}),
        ("/payments/42/refund", {"json": {"reason": ""}}),
        ("/payments/42/refund", {"json": {"reason": "a\x00b"}}),
        ("/payments/42/refund", {"json": {"reason": 5}}),
        ("/payments/42/refund", {"json": {"why": "typo"}}),
        ("/payments/42/refund", {"json": ["reason"]}),
        ("/payments/42/refund", {"content": b"{", "headers": JSON}),
        ("/payments/42/refund", {"content": b"reason=x"}),
        ("/payments/42/refund?reason=x", {}),
    ]
    async with client_of(http_app(refunds=refunds)) as client:
        for path, options in bad:
            response = await client.post(path, **options)
            assert response.status_code == 400, (path[:40], options, response.text)
            assert response.json()["status"] == 400
        too_big = await client.post("/payments/42/refund", content=b"{" + b" " * 20_000 + b"}", headers=JSON)
        assert too_big.status_code == 413
        assert too_big.json() == {"error": "request body too large", "status": 413}
        assert (await client.get("/payments/42/refund")).status_code == 405
    assert refunds.calls == []


async def test_replay_parameters_from_the_query_or_the_body() -> None:
    lots = FakeLots()
    async with client_of(http_app(dlq=lots)) as client:
        for call in (
            client.post("/admin/dlq/replay"),
            client.post("/admin/dlq/replay", params={"limit": 3}),
            client.post("/admin/dlq/replay", json={"limit": 4}),
            client.post("/admin/dlq/replay", json={"limit": 5, "queue": "order-cancelled"}),
            client.post("/admin/dlq/replay", params={"queue": "payment.order-cancelled"}, json={"limit": 6}),
        ):
            assert (await call).status_code == 200
        answer = (await client.post("/admin/dlq/replay", json={"queue": "order-cancelled"})).json()
        assert answer == {
            "queue": "payment.order-cancelled.dlq",
            "target": "payment.order-cancelled",
            "replayed": 1,
            "remaining": 0,
        }
    assert lots.calls == [
        ("replay", None, None),
        ("replay", 3, None),
        ("replay", 4, None),
        ("replay", 5, "order-cancelled"),
        ("replay", 6, "payment.order-cancelled"),
        ("replay", None, "order-cancelled"),
    ]


async def test_replay_parameters_are_never_silently_ignored() -> None:
    lots = FakeLots()
    bad: list[tuple[str, dict[str, Any]]] = [
        ("?limit=0", {}),
        ("?limit=1000001", {}),
        ("?limit=1&limit=2", {}),
        ("?max=1", {}),
        ("?queue=nope", {}),
        ("", {"json": {"limit": 0}}),
        ("", {"json": {"limit": "1"}}),
        ("", {"json": {"limit": 1.5}}),
        ("", {"json": {"limit": True}}),
        ("", {"json": {"max": 1}}),
        ("", {"json": {"limit": 1, "dryRun": True}}),
        ("", {"json": {"queue": "nope"}}),
        ("", {"json": [1]}),
        ("", {"content": b"limit=1"}),
        ("", {"content": b'{"limit": 1', "headers": JSON}),
        ("?limit=1", {"json": {"limit": 1}}),
        ("?queue=order-cancelled", {"json": {"queue": "order-cancelled"}}),
    ]
    async with client_of(http_app(dlq=lots)) as client:
        for query, options in bad:
            response = await client.post(f"/admin/dlq/replay{query}", **options)
            assert response.status_code == 400, (query, options, response.text)
            assert set(response.json()) == {"error", "status"}
        listing = await client.get("/admin/dlq", params={"queue": "order-cancelled", "limit": 1})
        assert listing.json()["queue"] == "payment.order-cancelled.dlq"
        assert listing.json()["limit"] == 1
    assert lots.calls == [("list", 1, "order-cancelled")]


async def test_the_openapi_document_describes_every_admin_route() -> None:
    async with client_of(http_app(dlq=FakeLots(), refunds=FakeRefunds())) as client:
        response = await client.get("/openapi.json")
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    operations = {(method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()}
    assert set(operations) == {
        ("GET", "/payments"),
        ("GET", "/payments/by-id/{paymentId}"),
        ("GET", "/payments/{orderId}"),
        ("POST", "/payments/{orderId}/refund"),
        ("GET", "/admin/dlq"),
        ("POST", "/admin/dlq/replay"),
    }
    for key, operation in operations.items():
        assert operation["security"] == [{"bearerAuth": []}], key
        assert "422" not in operation["responses"], key
        assert {"200", "400", "401", "429"} <= set(operation["responses"]), key
    listing = {p["name"] for p in operations[("GET", "/payments")]["parameters"]}
    assert listing == {"buyerId", "status", "limit", "offset"}
    assert {"409", "502", "503"} <= set(operations[("POST", "/payments/{orderId}/refund")]["responses"])
    assert "requestBody" in operations[("POST", "/payments/{orderId}/refund")]
    assert "requestBody" in operations[("POST", "/admin/dlq/replay")]
    record = document["components"]["schemas"]["PaymentRecord"]["properties"]
    assert {"refundId", "refundedAt", "orderId", "paymentMethod"} <= set(record)
