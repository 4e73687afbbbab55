"""The outcomes' own AMQP connection: every outcome event goes out on one channel with publisher
confirms, opened for that alone, so that publishing never waits behind the consumers'
connection (flow control, the deliveries coming in) and costs one aiormq `basic_publish`
rather than FastStream's publisher chain (micro-benchmark in the commit that introduced it).

- The connection is aio-pika's robust one: after a broker restart it reconnects and reopens
  the channel by itself. A publish that finds the channel closed waits up to
  `ready_timeout_s` for it to come back, then raises.
- `send` returns only once the broker has confirmed the message. A nack (`DeliveryError`), a
  closed channel or a lost connection raises: the outcome stays owed in the database (not
  marked published), and the reconciler publishes it (see `Consumers._announce`).
- An outcome no queue is bound for is confirmed by the broker and dropped, as it always was
  (`payment.refunded` may have no consumer at all): it is published `mandatory`, so the
  broker hands it back and a warning names it, but that is not an error.
- Nothing is declared here: the exchange is declared by the subscribers, and the Foodies user
  may only touch `^(payment\\.|foodies$)`. The exchange is used by name.
- With a tracer provider, each publish is a PRODUCER span `<exchange>.<routing key> publish`
  and the message carries its W3C `traceparent` header, as FastStream's telemetry middleware
  does for what it publishes; without one, no header and no span.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq import spec
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import DeliveryError
from loguru import logger

from app.messaging.broker import RECONNECT_INTERVAL_S

CONTENT_TYPE = "application/json"
PERSISTENT = 2


class OutcomeChannel:
    """A robust connection and one confirming channel, publishing to one exchange."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        *,
        tracer_provider: Any = None,
        ready_timeout_s: float = 10.0,
        reconnect_interval_s: float = RECONNECT_INTERVAL_S,
        name: str = "payment-service outcomes",
    ) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.ready_timeout_s = ready_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self.name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._underlay: AbstractChannel | None = None  # aiormq's channel, replaced after a reopen
        self._lock = asyncio.Lock()
        self._closed = False
        self._tracer = tracer_provider.get_tracer("app.payment.outcomes") if tracer_provider is not None else None

    async def open(self) -> None:
        """Connect and open the channel (once; later calls return at once)."""
        async with self._lock:
            if self._channel is not None:
                return
            if self._closed:
                raise RuntimeError("the outcome channel is closed")
            connection = await aio_pika.connect_robust(
                self.amqp_url,
                reconnect_interval=self.reconnect_interval_s,
                client_properties={"connection_name": self.name},
            )
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
                self._underlay = await channel.get_underlay_channel()
            except BaseException:
                await connection.close()
                raise
            self._connection, self._channel = connection, channel
            logger.debug("outcome channel open", exchange=self.exchange)

    async def close(self) -> None:
        """Close the connection; publishes still waiting for a confirm fail."""
        async with self._lock:
            self._closed = True
            connection, self._connection, self._channel, self._underlay = self._connection, None, None, None
        if connection is not None:
            await connection.close()

    async def send(self, routing_key: str, body: bytes, event_id: str) -> None:
        """Publish persistently to the exchange and wait for the broker's confirm."""
        if self._tracer is None:
            await self._publish(routing_key, body, event_id, None)
            return
        await self._traced(routing_key, body, event_id)

    async def _publish(self, routing_key: str, body: bytes, event_id: str, headers: dict[str, Any] | None) -> None:
        channel = self._underlay
        if channel is None or channel.is_closed:
            channel = await self._reopened()
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=event_id,
            correlation_id=event_id,
            timestamp=datetime.now(UTC),
            headers=headers,
        )
        confirmation = await channel.basic_publish(
            body, exchange=self.exchange, routing_key=routing_key, properties=properties, mandatory=True
        )
        if isinstance(confirmation, spec.Basic.Ack):
            return
        if isinstance(confirmation, DeliveredMessage):  # handed back: nothing is bound for it
            logger.warning(
                "outcome {routing_key} reached no queue: nothing is bound to it on {exchange}",
                routing_key=routing_key,
                exchange=self.exchange,
            )
            return
        raise DeliveryError(None, confirmation)  # type: ignore[arg-type]  # a nack raises already; be sure

    async def _reopened(self) -> AbstractChannel:
        """The channel, opened lazily (a message may arrive before start-up finished) or
        waited for while the robust connection reconnects (at most `ready_timeout_s`)."""
        if self._channel is None:
            await self.open()
        channel = self._channel
        if channel is None:  # closed meanwhile
            raise RuntimeError("the outcome channel is closed")
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                await channel.ready()
                underlay = await channel.get_underlay_channel()
        except TimeoutError:
            raise ConnectionError(f"the outcome channel did not come back within {self.ready_timeout_s:g} s") from None
        self._underlay = underlay
        return underlay

    async def _traced(self, routing_key: str, body: bytes, event_id: str) -> None:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        assert self._tracer is not None
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": self.exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.conversation_id": event_id,
            "messaging.operation": "publish",
        }
        with self._tracer.start_as_current_span(
            f"{self.exchange}.{routing_key} publish", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            headers: dict[str, Any] = {}
            TraceContextTextMapPropagator().inject(headers)
            await self._publish(routing_key, body, event_id, headers)
