"""End to end in one process: real RabbitMQ, real PostgreSQL, the real app and its HTTP routes."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import bus_for, running_app
from tests.support import FAILED_KEYS, SUCCEEDED_KEYS, event, next_order_id


@pytest.fixture
async def app(settings_factory):  # noqa: ANN001, ANN201
    settings = settings_factory()
    async with running_app(settings) as app, bus_for(settings) as bus:
        app.bus = bus
        yield app


async def test_success_and_decline_publish_persistent_outcomes_with_exact_keys(app) -> None:  # noqa: ANN001
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


async def test_same_event_twice_gives_two_outcomes_with_same_payment(app) -> None:  # noqa: ANN001
    body = event()
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]], each=2)
    first, second = app.bus.for_order(body["orderId"])
    assert first.body["paymentId"] == second.body["paymentId"]
    assert first.body == second.body
    assert app.components.gateway.calls == 1


async def test_replayed_failure_keeps_its_failure_code(app) -> None:  # noqa: ANN001
    body = event(card="2222")
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]], each=2)
    assert {o.body["failureCode"] for o in app.bus.for_order(body["orderId"])} == {"CARD_EXPIRED"}


async def test_kotlin_message_without_content_type_is_processed(app) -> None:  # noqa: ANN001
    body = event()
    await app.bus.publish(json.dumps(body).encode(), content_type=None)
    with_json_type = event()
    await app.bus.publish(with_json_type, content_type="application/json")
    await app.bus.wait_for([body["orderId"], with_json_type["orderId"]])


INVALID = [
    (b"not json at all", "invalid JSON"),
    (b"[1,2,3]", "the event is not a JSON object"),
    (json.dumps({k: v for k, v in event().items() if k != "buyerId"}).encode(), "buyerId: Field required"),
    (json.dumps(event(orderId=0)).encode(), "orderId:"),
    (json.dumps(event(totalAmount="12.345")).encode(), "totalAmount:"),
    (json.dumps(event(currency="usd")).encode(), "currency:"),
    (json.dumps(event(card="12")).encode(), "paymentMethod.cardLastFour:"),
]


async def test_invalid_messages_are_parked_with_reason_while_valid_ones_behind_succeed(app) -> None:  # noqa: ANN001
    dlq = app.components.topology.dlq.name
    for raw, _ in INVALID:
        await app.bus.publish(raw)
    valid = event()
    await app.bus.publish(valid)
    await app.bus.wait_for([valid["orderId"]])
    for _ in range(50):
        if await app.bus.queue_depth(dlq) >= len(INVALID):
            break
        await asyncio.sleep(0.1)
    parked = await app.bus.get_parked(dlq)
    assert [m.body for m in parked] == [raw for raw, _ in INVALID]
    for message, (_, reason) in zip(parked, INVALID, strict=True):
        assert message.headers["x-rejection-reason"].startswith(reason), message.headers
        assert message.delivery_mode == 2
    assert await app.bus.queue_depth(app.components.topology.queue.name) == 0  # all acked


async def test_http_payment_record_has_the_contract_shape(app) -> None:  # noqa: ANN001
    body = event()
    await app.bus.publish(body)
    await app.bus.wait_for([body["orderId"]])
    response = await app.client.get(f"/payments/{body['orderId']}")
    assert response.status_code == 200
    record = response.json()
    assert list(record) == [
        "id", "orderId", "buyerId", "amount", "currency", "status", "paymentMethod",
        "transactionId", "failureReason", "createdAt", "processedAt",
    ]
    assert list(record["paymentMethod"]) == [
        "type", "cardLastFour", "cardBrand", "cardHolderName", "expirationMonth", "expirationYear",
    ]
    assert record["status"] == "SUCCEEDED" and record["amount"] == "49.99" and record["failureReason"] is None
    assert record["createdAt"].endswith("Z") and record["processedAt"].endswith("Z")
    assert record["id"] == app.bus.for_order(body["orderId"])[0].body["paymentId"]


async def test_http_404_and_400(app) -> None:  # noqa: ANN001
    missing = await app.client.get(f"/payments/{next_order_id()}")
    assert missing.status_code == 404 and "error" in missing.json()
    for bad in ["invalid", "0", "-1", "1.5", "99999999999999999999", "9223372036854775808"]:
        response = await app.client.get(f"/payments/{bad}")
        assert response.status_code == 400, bad
        assert response.json()["error"]


async def test_probes(app) -> None:  # noqa: ANN001
    for path in ("/healthz/startup", "/healthz/liveness", "/healthz"):
        assert (await app.client.get(path)).status_code == 200
    for path in ("/healthz/readiness", "/healthz/ready"):
        response = await app.client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "UP", "checks": {"database": "UP", "rabbitmq": "UP"}}
    metrics = await app.client.get("/metrics")
    assert metrics.status_code == 200 and "payment_processed_total" in metrics.text


async def test_admin_token_guards_payments_but_not_probes(settings_factory) -> None:  # noqa: ANN001
    async with running_app(settings_factory(admin_token="s3cret")) as app:
        assert (await app.client.get("/payments/1")).status_code == 401
        assert (await app.client.get("/payments/1", headers={"Authorization": "Bearer nope"})).status_code == 401
        authorized = await app.client.get("/payments/1", headers={"Authorization": "Bearer s3cret"})
        assert authorized.status_code == 404
        assert (await app.client.get("/healthz/readiness")).status_code == 200
        assert (await app.client.get("/metrics")).status_code == 200


class _BrokenStore:
    """A store with a bug: every claim fails (not an outage, which would be waited out)."""

    async def claim(self, request, lease_s):  # noqa: ANN001, ANN201
        raise RuntimeError("bug in the store")


async def test_a_message_failing_twice_is_parked_not_cycled(app) -> None:  # noqa: ANN001
    app.components.service.store = _BrokenStore()
    body = event()
    await app.bus.publish(body)
    dlq = app.components.topology.dlq.name
    for _ in range(100):
        if await app.bus.queue_depth(dlq) == 1:
            break
        await asyncio.sleep(0.1)
    [parked] = await app.bus.get_parked(dlq)
    assert json.loads(parked.body) == body
    assert parked.headers["x-rejection-reason"] == "processing failed: RuntimeError: bug in the store"
    assert parked.headers["x-rejection-category"] == "processing_error"
    assert await app.bus.queue_depth(app.components.topology.queue.name) == 0
    assert app.bus.for_order(body["orderId"]) == []
