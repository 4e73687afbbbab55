"""Operator actions on the parking lot (`<consumed queue>.dlq`): look at the parked messages,
and move them back to the consumed queue once the cause is fixed.

Both use their own short AMQP connection, apart from the consumer's.

Listing. AMQP has no "peek": a message can only be seen by receiving it. `list` takes up to
`limit` messages with `basic.get` on one channel *without acknowledging them*, so that it
never sees one message twice, then hands all of them back at once with one
`basic.nack(multiple, requeue)`. RabbitMQ puts requeued messages back at their original place
in the queue, so the order is kept; the messages are only marked `redelivered`, which
nothing reads here (replay publishes a fresh copy). While a listing runs, the messages it
holds are invisible to a concurrent replay for a moment; if the connection drops they are
requeued by the broker. Nothing is removed.

Replaying. One message at a time: `basic.get` from the parking lot, publish a copy to the
consumed queue through the default exchange (persistent, `mandatory`, waiting for the
publisher confirm), and only then acknowledge the parked original. A crash between the two
steps leaves the message in both queues — a duplicate, never a loss; processing is
idempotent by orderId and an invalid message simply parks again. The copy keeps the body,
content type, message id and headers; the `x-rejection-*` headers go (the consumer adds
fresh ones if it parks the message again) and the old reason stays as
`x-previous-rejection-reason`. A replay moves at most the number of messages parked when it
started, so messages that park again during the replay are not replayed in a loop.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from loguru import logger

REJECTION_HEADER = "x-rejection-reason"  # the same header app.messaging.ParkingLot writes
PREVIOUS_REASON_HEADER = "x-previous-rejection-reason"
REPLAY_COUNT_HEADER = "x-replay-count"
# Set by the parking lot; meaningless on a message back in the consumed queue.
_PARKING_HEADERS = ("x-rejected-at", "x-original-queue")
PREVIEW_BYTES = 256
MAX_LIST = 1000
# What an unreachable or failing broker raises (connection refused, timeouts, AMQP errors).
BROKER_ERRORS: tuple[type[BaseException], ...] = (AMQPError, OSError, TimeoutError)


class DlqError(Exception):
    """A parking-lot action that cannot be done (e.g. the consumed queue does not exist)."""


@dataclass(frozen=True)
class ParkedMessage:
    reason: str | None
    category: str | None
    parked_at: str | None
    body_size: int
    body_preview: str
    message_id: str | None
    content_type: str | None
    previous_reason: str | None
    replay_count: int

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> ParkedMessage:
        headers = message.headers or {}
        return cls(
            reason=_text(headers.get(REJECTION_HEADER)),
            category=_text(headers.get("x-rejection-category")),
            parked_at=_text(headers.get("x-rejected-at")),
            body_size=len(message.body),
            body_preview=message.body[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
            message_id=message.message_id,
            content_type=message.content_type,
            previous_reason=_text(headers.get(PREVIOUS_REASON_HEADER)),
            replay_count=_int(headers.get(REPLAY_COUNT_HEADER)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "category": self.category,
            "parkedAt": self.parked_at,
            "bodySize": self.body_size,
            "bodyPreview": self.body_preview,
            "messageId": self.message_id,
            "contentType": self.content_type,
            "previousReason": self.previous_reason,
            "replayCount": self.replay_count,
        }


@dataclass(frozen=True)
class DlqListing:
    queue: str
    count: int  # messages waiting in the parking lot
    messages: list[ParkedMessage]

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "count": self.count, "messages": [m.to_json() for m in self.messages]}


@dataclass(frozen=True)
class ReplayResult:
    queue: str
    target: str
    replayed: int
    remaining: int  # left in the parking lot afterwards (including any that parked again)

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "target": self.target, "replayed": self.replayed, "remaining": self.remaining}


class ReplayFault:
    """Test-only crash point (DLQ_REPLAY_FAULT=after_publish[:n]): SIGKILL this process right
    after the n-th copy is confirmed, before its original is acknowledged."""

    def __init__(self, spec: str | None) -> None:
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point != "after_publish":
                raise ValueError(f"unknown DLQ replay fault point {point!r}; only after_publish")
            self.remaining = int(count or 1)

    def after_publish(self) -> None:
        if self.remaining <= 0:
            return
        self.remaining -= 1
        if self.remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)


class DlqOperations:
    """List and replay the parking lot of one consumed queue."""

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        dlq: str | None = None,
        *,
        fault: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.dlq = dlq or f"{queue}.dlq"
        self.timeout_s = timeout_s
        self._fault_spec = fault

    @classmethod
    def from_settings(cls, settings: Any) -> DlqOperations:
        return cls(
            settings.amqp_url, settings.rabbitmq_consume_queue, settings.dlq_name, fault=settings.dlq_replay_fault
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
        connection = await aio_pika.connect(
            self.amqp_url, timeout=self.timeout_s, client_properties={"connection_name": "payment-service dlq"}
        )
        try:
            yield connection
        finally:
            await connection.close()

    async def _existing(
        self, connection: aio_pika.abc.AbstractConnection, name: str
    ) -> tuple[AbstractChannel, AbstractQueue | None]:
        """A passive declare: never creates the queue nor argues about its arguments."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            return channel, await channel.declare_queue(name, passive=True, timeout=self.timeout_s)
        except ChannelNotFoundEntity:
            # A failed passive declare closes the channel; give the caller a fresh one.
            return await connection.channel(publisher_confirms=True, on_return_raises=True), None

    async def count(self) -> int:
        async with self._connection() as connection:
            _, dlq = await self._existing(connection, self.dlq)
            return _depth(dlq)

    async def list(self, limit: int = 100) -> DlqListing:
        """Up to `limit` parked messages, oldest first, without removing any."""
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be between 1 and {MAX_LIST}")
        async with self._connection() as connection:
            _, dlq = await self._existing(connection, self.dlq)
            if dlq is None:
                return DlqListing(self.dlq, 0, [])
            held: list[AbstractIncomingMessage] = []
            try:
                while len(held) < limit:
                    message = await dlq.get(no_ack=False, fail=False, timeout=self.timeout_s)
                    if message is None:
                        break
                    held.append(message)
            finally:
                if held:
                    # One nack for all: back to their places, in order.
                    await held[-1].nack(multiple=True, requeue=True)
            return DlqListing(self.dlq, max(_depth(dlq), len(held)), [ParkedMessage.of(m) for m in held])

    async def replay(self, limit: int | None = None) -> ReplayResult:
        """Move up to `limit` (default: all that are parked now) messages back to the consumed queue."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be a positive integer")
        fault = ReplayFault(self._fault_spec)
        async with self._connection() as connection:
            channel, dlq = await self._existing(connection, self.dlq)
            if dlq is None:
                return ReplayResult(self.dlq, self.queue, 0, 0)
            _, target = await self._existing(connection, self.queue)
            if target is None:
                raise DlqError(f"the consumed queue {self.queue} does not exist; start the service first")
            budget = _depth(dlq) if limit is None else min(limit, _depth(dlq))
            replayed = 0
            while replayed < budget:
                message = await dlq.get(no_ack=False, fail=False, timeout=self.timeout_s)
                if message is None:
                    break
                try:
                    # Returns once the broker confirmed the copy; raises if it was refused or unroutable.
                    await channel.default_exchange.publish(
                        replay_copy(message), routing_key=self.queue, mandatory=True, timeout=self.timeout_s
                    )
                except BaseException:
                    # The original stays parked (closing the channel would requeue it as well).
                    if not channel.is_closed:
                        await message.nack(requeue=True)
                    raise
                fault.after_publish()
                await message.ack()
                replayed += 1
            _, after = await self._existing(connection, self.dlq)
            remaining = _depth(after)
        logger.info(
            "replayed {replayed} parked messages from {dlq} to {queue}",
            replayed=replayed,
            dlq=self.dlq,
            queue=self.queue,
            remaining=remaining,
        )
        return ReplayResult(self.dlq, self.queue, replayed, remaining)


def replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers: dict[str, Any] = {
        key: value
        for key, value in (message.headers or {}).items()
        if not key.startswith("x-rejection") and key not in _PARKING_HEADERS and key != PREVIOUS_REASON_HEADER
    }
    reason = (message.headers or {}).get(REJECTION_HEADER)
    if reason is not None:
        headers[PREVIOUS_REASON_HEADER] = reason
    elif PREVIOUS_REASON_HEADER in (message.headers or {}):
        headers[PREVIOUS_REASON_HEADER] = message.headers[PREVIOUS_REASON_HEADER]
    headers[REPLAY_COUNT_HEADER] = _int((message.headers or {}).get(REPLAY_COUNT_HEADER)) + 1
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _depth(queue: AbstractQueue | None) -> int:
    if queue is None or queue.declaration_result is None:
        return 0
    return int(queue.declaration_result.message_count or 0)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
