"""The parking lot: a message that cannot be processed at all goes, with its original body and
a reason header, to `<queue>.dlq` (through the exchange), and is then acknowledged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitMessage
from loguru import logger

from app.messaging.topology import (
    CATEGORY_HEADER,
    ORIGINAL_QUEUE_HEADER,
    REJECTED_AT_HEADER,
    REJECTION_HEADER,
    Lot,
    Topology,
)
from app.observability.metrics import PaymentMetrics


def utc_text(at: datetime) -> str:
    """An instant as ISO-8601 UTC with milliseconds and a `Z` (the format of every timestamp we write)."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ParkingLot:
    def __init__(self, broker: RabbitBroker, topology: Topology, metrics: PaymentMetrics) -> None:
        self.broker = broker
        self.topology = topology
        self.metrics = metrics

    async def park(self, message: RabbitMessage, lot: Lot, reason: str, category: str) -> None:
        """Publish a copy to the lot (persistent, confirmed, `mandatory` so a missing binding is
        an error, not a silent loss). The caller acknowledges the original afterwards."""
        headers: dict[str, Any] = {
            key: value for key, value in (message.headers or {}).items() if not key.startswith("x-rejection")
        }
        headers[REJECTION_HEADER] = reason
        headers[CATEGORY_HEADER] = category
        headers[REJECTED_AT_HEADER] = utc_text(datetime.now(UTC))
        headers[ORIGINAL_QUEUE_HEADER] = lot.queue.name
        await self.broker.publish(
            message.body,
            exchange=self.topology.exchange,
            routing_key=lot.park_key,
            persist=True,
            mandatory=True,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
        )
        self.metrics.labelled(self.metrics.parked, category).inc()
        logger.error(
            "parked message in {dlq}: {reason}",
            dlq=lot.dlq.name,
            reason=reason,
            category=category,
            message_id=message.message_id,
        )
