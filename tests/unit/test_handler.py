"""The event contract end to end in memory: FastStream's test broker delivers to the decorated
subscribers, the consumer policy runs against an in-memory store and the simulated gateway,
and the outcomes are recorded by an in-memory sink in place of their AMQP channel. No RabbitMQ,
no PostgreSQL."""

from __future__ import annotations

import json

import pytest
from faststream.rabbit import RabbitMessage, RabbitQueue
from faststream.rabbit.testing import TestRabbitBroker

from app.bootstrap import build
from app.config import load_settings
from app.gateway import SimulatedGateway
from app.messaging.topology import ORDER_CANCELLED_KEY, STOCK_CONFIRMED_KEY
from tests.fakes import InMemoryPaymentStore, RecordingOutcomes
from tests.support import FAILED_KEYS, REFUNDED_KEYS, SUCCEEDED_KEYS, event


@pytest.fixture
def parts():
    settings = load_settings(payment_delay_ms=0)
    return build(
        settings, ledger=InMemoryPaymentStore(), gateway=SimulatedGateway(delay_ms=0), outbound=RecordingOutcomes()
    )


def published(parts, routing_key: str) -> list[dict]:
    return [json.loads(body) for body in parts.outbound.bodies(routing_key)]


async def send(broker, parts, body, routing_key: str = STOCK_CONFIRMED_KEY) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    await broker.publish(raw, exchange=parts.topology.exchange, routing_key=routing_key)


async def test_success_publishes_payment_succeeded_with_exact_keys(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        body = event(card="1111")  # 4111 1111 1111 1111 succeeds
        await send(broker, parts, body)
        [outcome] = published(parts, "payment.succeeded")
        assert set(outcome) == SUCCEEDED_KEYS
        assert outcome["orderId"] == body["orderId"] and outcome["amount"] == "49.99"
        assert published(parts, "payment.failed") == []


async def test_decline_publishes_payment_failed(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        await send(broker, parts, event(card="0000"))
        [outcome] = published(parts, "payment.failed")
        assert set(outcome) == FAILED_KEYS
        assert (outcome["failureCode"], outcome["failureReason"]) == ("CARD_DECLINED", "Card declined")


async def test_unchargeable_order_fails_with_a_reason_instead_of_parking(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        await send(broker, parts, event(totalAmount="1e3"))
        [outcome] = published(parts, "payment.failed")
        assert (outcome["failureCode"], outcome["failureReason"]) == ("UNKNOWN", "Invalid totalAmount")


async def test_same_event_twice_publishes_the_same_outcome(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        raw = json.dumps(event()).encode()
        await send(broker, parts, raw)
        await send(broker, parts, raw)
        first, second = published(parts, "payment.succeeded")
        assert first == second  # same paymentId, transactionId and eventId


async def test_unreadable_message_is_parked_and_not_charged(parts) -> None:
    parked: list[tuple[bytes, dict]] = []

    lot = parts.topology.stock_confirmed
    parked_queue = RabbitQueue(lot.dlq.name, routing_key=lot.park_key)  # bound as the service binds it

    @parts.broker.subscriber(parked_queue, parts.topology.exchange)
    async def parking_lot(body: bytes) -> None:
        message: RabbitMessage = parts.broker.context.get_local("message")
        parked.append((message.body, message.headers))

    async with TestRabbitBroker(parts.broker) as broker:
        await send(broker, parts, b"{not json")
        await send(broker, parts, event(orderId=-5))
        assert published(parts, "payment.succeeded") == published(parts, "payment.failed") == []
        assert parts.ledger.payments == {}
        assert next(body for body, _ in parked) == b"{not json"
        assert len(parked) == 2 and all(headers["x-rejection-reason"] for _, headers in parked)
        assert consumed(parts, "parked") == 2 and consumed(parts, "acked") is None


async def test_cancel_after_success_publishes_payment_refunded(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        body = event()
        await send(broker, parts, body)
        cancel = {"orderId": body["orderId"], "buyerId": body["buyerId"], "reason": "Customer changed their mind"}
        await send(broker, parts, cancel, ORDER_CANCELLED_KEY)
        [refunded] = published(parts, "payment.refunded")
        assert set(refunded) == REFUNDED_KEYS
        assert refunded["reason"] == "Customer changed their mind" and refunded["refundId"].startswith("re_")


async def test_cancel_before_stock_confirmed_means_never_charged_and_nothing_published(parts) -> None:
    async with TestRabbitBroker(parts.broker) as broker:
        body = event()
        await send(broker, parts, {"orderId": body["orderId"], "reason": "changed mind"}, ORDER_CANCELLED_KEY)
        await send(broker, parts, body)
        for key in ("payment.succeeded", "payment.failed", "payment.refunded"):
            assert published(parts, key) == []
        assert parts.ledger.payments[body["orderId"]].status.value == "CANCELLED"


class _Delivery:
    """A consumed message as the consumer policy sees it (body, ack/nack, redelivered flag)."""

    def __init__(self, body: bytes, redelivered: bool = False) -> None:
        self.body = body
        self.headers: dict = {}
        self.content_type = None
        self.message_id = "m-1"
        self.raw_message = type("Raw", (), {"redelivered": redelivered})()
        self.acked = False
        self.nacked: list[bool] = []

    async def ack(self) -> None:
        self.acked = True

    async def nack(self, requeue: bool = True) -> None:
        self.nacked.append(requeue)


async def test_an_outcome_the_broker_did_not_confirm_stays_owed_and_the_message_is_acknowledged(parts) -> None:
    """A nack or a lost outcome connection after the outcome is recorded: the outcome is owed in
    the database (the reconciler publishes it), so the message is settled, never requeued to be
    parked on its redelivery."""
    from aiormq.exceptions import DeliveryError

    parts.outbound.failure = DeliveryError(None, None)  # a nack (a lost connection alike)
    body = event()
    delivery = _Delivery(json.dumps(body).encode(), redelivered=True)  # as after a broker restart
    await parts.consumers.stock_confirmed(delivery)
    assert delivery.acked and delivery.nacked == []
    assert parts.ledger.payments[body["orderId"]].status.value == "SUCCEEDED"  # recorded, still owed
    assert parts.outbound.sent == [] and parts.outcomes.marks._pending == []  # never marked published
    assert consumed(parts, "parked") is None and consumed(parts, "requeued") is None

    parts.outbound.failure = None  # a duplicate delivery later announces the stored outcome
    again = _Delivery(json.dumps(body).encode(), redelivered=True)
    await parts.consumers.stock_confirmed(again)
    assert again.acked and len(published(parts, "payment.succeeded")) == 1
    assert consumed(parts, "acked") == 2


def consumed(parts, result: str) -> float | None:
    queue = parts.topology.stock_confirmed.queue.name
    return parts.metrics.registry.get_sample_value("payment_consumed_total", {"queue": queue, "result": result})
