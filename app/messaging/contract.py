"""The event contract, as the AsyncAPI document shows it: what we consume and what we publish.

Each subscriber is a decorated function that hands the message to the consumer policy
(consumer.py). The annotations name the payload models for the AsyncAPI document; decoding
itself is the consumers' tolerant reader (the broker runs with `apply_types=False`).
"""

from __future__ import annotations

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitMessage
from faststream.rabbit.publisher.usecase import RabbitPublisher

from app.messaging.consumer import Consumers
from app.messaging.events import (
    OrderCancelledEvent,
    OrderPaymentFailedEvent,
    OrderPaymentSucceededEvent,
    OrderStockConfirmedEvent,
    PaymentRefundedEvent,
)
from app.messaging.topology import (
    FAILED_KEY,
    ORDER_CANCELLED_KEY,
    REFUNDED_KEY,
    STOCK_CONFIRMED_KEY,
    SUCCEEDED_KEY,
    Topology,
)


async def raw_body(message: RabbitMessage) -> bytes:
    """Hand the body over undecoded: the consumers read it tolerantly (the Kotlin publisher
    sends no content type, and a bad body must be parked, not fail inside the framework)."""
    return message.body


def declare_publishers(broker: RabbitBroker, topology: Topology) -> dict[str, RabbitPublisher]:
    """The three outcome publishers, by routing key: persistent, on the `foodies` exchange."""
    outcomes = (
        (SUCCEEDED_KEY, OrderPaymentSucceededEvent, "The buyer was charged; the order moves to Paid."),
        (FAILED_KEY, OrderPaymentFailedEvent, "The charge failed; the order is cancelled."),
        (REFUNDED_KEY, PaymentRefundedEvent, "A cancelled order's charge was given back (or an operator refunded it)."),
    )
    return {
        key: broker.publisher(
            exchange=topology.exchange,
            routing_key=key,
            persist=True,
            schema=schema,
            title=f"{topology.exchange.name}:{key}",
            description=description,
        )
        for key, schema, description in outcomes
    }


def register(broker: RabbitBroker, topology: Topology, consumers: Consumers) -> None:
    """The two subscribers; each message is acknowledged by the consumer policy itself. (The
    message comes from the broker's context at call time: the app replaces that context when
    it adopts the broker.)"""

    @broker.subscriber(
        topology.stock_confirmed.queue,
        topology.exchange,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title=f"{topology.stock_confirmed.queue.name}:{STOCK_CONFIRMED_KEY}",
        description="Stock is reserved for an order: charge the buyer once and publish the outcome.",
    )
    async def on_stock_confirmed(event: OrderStockConfirmedEvent) -> None:
        await consumers.stock_confirmed(broker.context.get_local("message"))

    @broker.subscriber(
        topology.order_cancelled.queue,
        topology.exchange,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title=f"{topology.order_cancelled.queue.name}:{ORDER_CANCELLED_KEY}",
        description="The order was cancelled: never charge it, and refund a charge already made.",
    )
    async def on_order_cancelled(event: OrderCancelledEvent) -> None:
        await consumers.order_cancelled(broker.context.get_local("message"))
