"""The RabbitMQ broker object and its settings (concurrency, confirms, graceful stop)."""

from __future__ import annotations

import logging
from typing import Any

from aiormq.exceptions import AMQPConnectionError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel

from app.config import Settings

# Both AMQP connections (the broker's and the outcomes' own) try again this often after a loss.
RECONNECT_INTERVAL_S = 2.0


def build_broker(settings: Settings, middlewares: tuple[Any, ...] = ()) -> RabbitBroker:
    return RabbitBroker(
        settings.amqp_url,
        # Bounded concurrency: at most this many unacknowledged messages per replica and queue.
        default_channel=Channel(prefetch_count=settings.consumer_concurrency, publisher_confirms=True),
        # Stop waits for in-flight handlers this long; the rest stay unacked for another replica.
        graceful_timeout=settings.shutdown_grace_seconds,
        reconnect_interval=RECONNECT_INTERVAL_S,
        middlewares=middlewares,
        log_level=logging.DEBUG,  # FastStream's per-message lines at DEBUG
        # No per-message dependency injection: the consumers decode the body themselves (a
        # tolerant reader), and injecting `RabbitMessage` would cost a worker-thread hop per
        # message. The handlers' annotations still document the payloads in AsyncAPI.
        apply_types=False,
        # Our own logger, so FastStream adds no stdout handler of its own (observability.logs routes it).
        logger=logging.getLogger("faststream.access.rabbit"),
        description="Foodies payment service: charges orders whose stock is confirmed, refunds cancelled ones.",
        # Documented server, independent of the local environment.
        specification_url="amqp://foodies-rabbitmq:5672/",
    )


def broker_unreachable(error: BaseException) -> bool:
    """Whether connecting failed because RabbitMQ is not there (yet): worth waiting for."""
    return isinstance(error, (OSError, AMQPConnectionError))
