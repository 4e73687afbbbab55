"""The RabbitMQ names this service uses: exchange, queues, bindings, routing keys and headers.

Everything goes through the one topic exchange (`foodies`): the Foodies RabbitMQ user may
only touch `^(payment\\.|foodies$)`, so nothing is published through the default exchange.
Parking and replay use routing keys outside `payment.*`, so that no consumer bound to our
outcomes (`payment.*`, `payment.#`) ever receives a parked or replayed order.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

from app.config import Settings

STOCK_CONFIRMED_KEY = "order.stock-confirmed"
ORDER_CANCELLED_KEY = "order.cancelled"
SUCCEEDED_KEY = "payment.succeeded"
FAILED_KEY = "payment.failed"
REFUNDED_KEY = "payment.refunded"

# Headers of a parked message (the original body is kept as it was).
REJECTION_HEADER = "x-rejection-reason"
CATEGORY_HEADER = "x-rejection-category"
REJECTED_AT_HEADER = "x-rejected-at"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
PREVIOUS_REASON_HEADER = "x-previous-rejection-reason"


def park_key(queue: str) -> str:
    """Routing key that delivers to `<queue>.dlq`."""
    return f"dlq.{queue}"


def replay_key(queue: str) -> str:
    """Routing key that delivers to `queue` alone (operator replays)."""
    return f"replay.{queue}"


@dataclass(frozen=True)
class Lot:
    """One consumed queue and its parking lot."""

    queue: RabbitQueue
    dlq: RabbitQueue

    @property
    def park_key(self) -> str:
        return park_key(self.queue.name)

    @property
    def replay_key(self) -> str:
        return replay_key(self.queue.name)


@dataclass(frozen=True)
class Topology:
    exchange: RabbitExchange
    stock_confirmed: Lot
    order_cancelled: Lot

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        def lot(name: str, key: str) -> Lot:
            # Plain durable classic queues with no arguments, as operators declare them.
            return Lot(RabbitQueue(name, durable=True, routing_key=key), RabbitQueue(f"{name}.dlq", durable=True))

        return cls(
            exchange=RabbitExchange(settings.rabbitmq_publish_exchange, type=ExchangeType.TOPIC, durable=True),
            stock_confirmed=lot(settings.rabbitmq_consume_queue, STOCK_CONFIRMED_KEY),
            order_cancelled=lot(settings.rabbitmq_cancel_queue, ORDER_CANCELLED_KEY),
        )

    @property
    def lots(self) -> tuple[Lot, Lot]:
        return (self.stock_confirmed, self.order_cancelled)

    def bindings(self) -> list[tuple[RabbitQueue, str]]:
        """The bindings the subscribers do not declare themselves: replay keys and parking lots."""
        found: list[tuple[RabbitQueue, str]] = []
        for lot in self.lots:
            found += [(lot.queue, lot.replay_key), (lot.dlq, lot.park_key)]
        return found
