"""The subscriber and publishers with FastStream's in-memory test broker (no RabbitMQ; an
in-memory store stands in for PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from faststream.rabbit import RabbitMessage
from faststream.rabbit.testing import TestRabbitBroker

from app.config import load_settings
from app.bootstrap import create_app
from tests.fakes import InMemoryPaymentStore
from tests.support import FAILED_KEYS, SUCCEEDED_KEYS, event


@pytest.fixture
def wired():  # noqa: ANN201
    app = create_app(load_settings(payment_delay_ms=0))
    components = app.components
    components.service.store = InMemoryPaymentStore()
    succeeded = components.outcomes.succeeded
    failed = components.outcomes.failed
    return components, succeeded, failed


def bodies(publisher) -> list[dict]:  # noqa: ANN001
    return [call.args[0] if isinstance(call.args[0], dict) else json.loads(call.args[0]) for call in publisher.mock.call_args_list]


async def test_success_publishes_payment_succeeded(wired) -> None:  # noqa: ANN001
    components, succeeded, failed = wired
    async with TestRabbitBroker(components.broker) as broker:
        body = event(card="4242")
        await broker.publish(json.dumps(body).encode(), exchange=components.topology.exchange, routing_key="order.stock-confirmed")
        [published] = bodies(succeeded)
        assert set(published) == SUCCEEDED_KEYS
        assert published["orderId"] == body["orderId"] and published["amount"] == "49.99"
        assert failed.mock.call_count == 0


async def test_decline_publishes_payment_failed(wired) -> None:  # noqa: ANN001
    components, succeeded, failed = wired
    async with TestRabbitBroker(components.broker) as broker:
        await broker.publish(json.dumps(event(card="0000")).encode(), exchange=components.topology.exchange, routing_key="order.stock-confirmed")
        [published] = bodies(failed)
        assert set(published) == FAILED_KEYS
        assert (published["failureCode"], published["failureReason"]) == ("CARD_DECLINED", "Card declined")
        assert succeeded.mock.call_count == 0


async def test_same_event_twice_publishes_twice_with_same_payment(wired) -> None:  # noqa: ANN001
    components, succeeded, _ = wired
    async with TestRabbitBroker(components.broker) as broker:
        raw = json.dumps(event()).encode()
        for _ in range(2):
            await broker.publish(raw, exchange=components.topology.exchange, routing_key="order.stock-confirmed")
        first, second = bodies(succeeded)
        assert first == second  # same paymentId, transactionId and eventId


async def test_invalid_message_is_parked_and_not_charged(wired) -> None:  # noqa: ANN001
    components, succeeded, failed = wired
    parked: list[tuple[bytes, dict]] = []

    @components.broker.subscriber(components.topology.dlq)
    async def parking_lot(body: bytes) -> None:
        message: RabbitMessage = components.broker.context.get_local("message")
        parked.append((message.body, message.headers))

    async with TestRabbitBroker(components.broker) as broker:
        await broker.publish(b"{not json", exchange=components.topology.exchange, routing_key="order.stock-confirmed")
        await broker.publish(json.dumps(event(orderId=-5)).encode(), exchange=components.topology.exchange, routing_key="order.stock-confirmed")
        assert succeeded.mock.call_count == 0 and failed.mock.call_count == 0
        assert components.service.store.payments == {}
        assert [body for body, _ in parked] == [b"{not json", parked[1][0]]
        assert parked[0][1]["x-rejection-reason"].startswith("invalid JSON")
        assert parked[1][1]["x-rejection-reason"].startswith("orderId:")
        samples = {s.labels["reason"]: s.value for s in components.metrics.parked.collect()[0].samples if s.name.endswith("_total")}
        assert samples == {"invalid_json": 1.0, "invalid_value": 1.0}
