"""End to end in one process: real RabbitMQ, real PostgreSQL, the real app and its HTTP routes."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.persistence.ledger import PaymentLedger
from tests.conftest import bus_for, running_app
from tests.support import FAILED_KEYS, SUCCEEDED_KEYS, event, next_order_id


@pytest.fixture
async def app(settings_factory):
    settings = settings_factory()
    async with running_app(settings) as app, bus_for(settings) as bus:
        app.bus = bus
        yield app


async def test_success_and_decline_publish_persistent_outcomes_with_exact_keys(app) -> None:
    ok, declined = event(card="4242"), event(card="0000")
    await app.bus.publish(ok)
    await app.bus.publish(declined)
    await app.bus.wait_for([ok["orderId"], declined["orderId"]], timeout=20)
    [success] = app.bus.for_order(ok["orderId"])
    [failure] = app.bus.for_order(declined["orderId"])
    assert success.routing_key == "payment.succeeded" and set(success.body) == SUCCEEDED_KEYS
    assert failure.routing_key == "payment.failed" and set(failure.body) == FAILED_KEYS
    assert failure.body["failureCode"] == "CARD_DECLINED"
    assert success.delivery_mode == 2 and failure.delivery_mode == 2
    assert success.body["transactionId"].startswith("txn_")


async def test_same_event_twice_gives_two_outcomes_with_same_payment(app) -> None:
    body = event()
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]], each=2)
    first, second = app.bus.for_order(body["orderId"])
    assert first.body["paymentId"] == second.body["paymentId"]
    assert first.body == second.body
    assert app.components.gateway.calls == 1


async def test_replayed_failure_keeps_its_failure_code(app) -> None:
    body = event(card="0002")
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]], each=2)
    assert {o.body["failureCode"] for o in app.bus.for_order(body["orderId"])} == {"CARD_EXPIRED"}


async def test_kotlin_message_without_content_type_is_processed(app) -> None:
    body = event()
    await app.bus.publish(json.dumps(body).encode(), content_type=None)
    with_json_type = event()
    await app.bus.publish(with_json_type, content_type="application/json")
    await app.bus.wait_for([body["orderId"], with_json_type["orderId"]])


UNREADABLE = [
    (b"not json at all", "invalid_json"),
    (b"[1,2,3]", "not_an_object"),
    (json.dumps({k: v for k, v in event().items() if k != "orderId"}).encode(), "missing_order_id"),
    (json.dumps(event(orderId=0)).encode(), "invalid_order_id"),
    (b'{"orderId": 1, "orderId": 2}', "duplicate_key"),
]
UNCHARGEABLE = [
    ({"totalAmount": "12.345"}, "UNKNOWN", "totalAmount"),
    ({"totalAmount": "1e3"}, "UNKNOWN", "totalAmount"),
    ({"currency": "XYZ"}, "UNKNOWN", "currency"),
    ({"buyerId": ""}, "UNKNOWN", "buyerId"),
    ({"paymentMethod": {"type": "CRYPTO"}}, "INVALID_CARD", "paymentMethod"),
]


async def test_only_unreadable_messages_are_parked_while_valid_ones_behind_succeed(app) -> None:
    lot = app.components.topology.stock_confirmed
    for raw, _ in UNREADABLE:
        await app.bus.publish(raw)
    valid = event(currency="usd", card="1111")  # lower-case currency and a 4111… card: charged
    await app.bus.publish(valid)
    await app.bus.wait_for([valid["orderId"]])
    assert app.bus.for_order(valid["orderId"])[0].routing_key == "payment.succeeded"
    for _ in range(50):
        if await app.bus.queue_depth(lot.dlq.name) >= len(UNREADABLE):
            break
        await asyncio.sleep(0.1)
    parked = await app.bus.get_parked(lot.dlq.name)
    assert [m.body for m in parked] == [raw for raw, _ in UNREADABLE]
    for message, (_, category) in zip(parked, UNREADABLE, strict=True):
        assert message.headers["x-rejection-category"] == category, message.headers
        assert message.headers["x-rejection-reason"]
        assert message.delivery_mode == 2
    assert await app.bus.queue_depth(lot.queue.name) == 0  # all acked


async def test_every_readable_order_gets_an_outcome(app) -> None:
    orders = [(event(**change), code, field) for change, code, field in UNCHARGEABLE]
    for body, _, _ in orders:
        await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"] for body, _, _ in orders])
    for body, code, field in orders:
        [outcome] = app.bus.for_order(body["orderId"])
        assert outcome.routing_key == "payment.failed" and set(outcome.body) == FAILED_KEYS
        assert outcome.body["failureCode"] == code
        assert field in outcome.body["failureReason"]
        record = (await app.client.get(f"/payments/{body['orderId']}")).json()
        assert record["status"] == "FAILED"
    assert app.components.gateway.calls == 0  # none of them was charged


async def test_http_payment_record_has_the_contract_shape(app) -> None:
    body = event()
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    response = await app.client.get(f"/payments/{body['orderId']}")
    assert response.status_code == 200
    record = response.json()
    assert list(record) == [
        "id",
        "orderId",
        "buyerId",
        "amount",
        "currency",
        "status",
        "paymentMethod",
        "transactionId",
        "failureReason",
        "createdAt",
        "processedAt",
        "refundId",
        "refundedAt",
    ]
    assert list(record["paymentMethod"]) == [
        "type",
        "cardLastFour",
        "cardBrand",
        "cardHolderName",
        "expirationMonth",
        "expirationYear",
    ]
    assert record["status"] == "SUCCEEDED" and record["amount"] == "49.99" and record["failureReason"] is None
    assert record["createdAt"].endswith("Z") and record["processedAt"].endswith("Z")
    assert record["id"] == app.bus.for_order(body["orderId"])[0].body["paymentId"]


async def test_http_404_and_400(app) -> None:
    missing = await app.client.get(f"/payments/{next_order_id()}")
    assert missing.status_code == 404 and "error" in missing.json()
    for bad in ["invalid", "0", "-1", "1.5", "99999999999999999999", "9223372036854775808"]:
        response = await app.client.get(f"/payments/{bad}")
        assert response.status_code == 400, bad
        assert response.json()["error"]


async def test_probes(app) -> None:
    for path in ("/healthz/startup", "/healthz/liveness", "/healthz"):
        assert (await app.client.get(path)).status_code == 200
    for path in ("/healthz/readiness", "/healthz/ready"):
        response = await app.client.get(path)
        assert response.status_code == 200
        checks = {"database": "UP", "rabbitmq": "UP", "consumer": "UP", "gateway": "UP"}
        assert response.json() == {"status": "UP", "checks": checks}
    metrics = await app.client.get("/metrics")
    assert metrics.status_code == 200 and "payment_processed_total" in metrics.text


async def test_admin_token_guards_payments_but_not_probes(settings_factory) -> None:
    async with running_app(settings_factory(admin_token="s3cret")) as app:
        assert (await app.client.get("/payments/1")).status_code == 401
        assert (await app.client.get("/payments/1", headers={"Authorization": "Bearer nope"})).status_code == 401
        authorized = await app.client.get("/payments/1", headers={"Authorization": "Bearer s3cret"})
        assert authorized.status_code == 404
        assert (await app.client.get("/healthz/readiness")).status_code == 200
        assert (await app.client.get("/metrics")).status_code == 200


class _BrokenLedger(PaymentLedger):
    """A ledger with a bug: every claim fails (not an outage, which would be waited out)."""

    async def claim(self, request, lease_s):
        raise RuntimeError("bug in the store")


async def test_a_message_failing_twice_is_parked_not_cycled(settings_factory) -> None:
    settings = settings_factory()
    ledger = _BrokenLedger(settings.postgres_dsn())
    async with running_app(settings, ledger=ledger) as app, bus_for(settings) as bus:
        lot = app.components.topology.stock_confirmed
        body = event()
        await bus.publish(body)
        for _ in range(100):
            if await bus.queue_depth(lot.dlq.name) == 1:
                break
            await asyncio.sleep(0.1)
        [parked] = await bus.get_parked(lot.dlq.name)
        assert json.loads(parked.body) == body
        assert parked.headers["x-rejection-reason"] == "processing failed: RuntimeError: bug in the store"
        assert parked.headers["x-rejection-category"] == "processing_error"
        assert await bus.queue_depth(lot.queue.name) == 0
        assert bus.for_order(body["orderId"]) == []
