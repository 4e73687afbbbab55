"""Operator actions on the parking lots (`<consumed queue>.dlq`): look at the parked messages,
and send them back to their consumed queue once the cause is fixed.

Both use their own short AMQP connection, apart from the consumer's. There is one lot per
consumed queue; every action names its lot by role (`stock-confirmed`, `order-cancelled`), by
the consumed queue's name or by the lot's own name, and defaults to the stock-confirmed one.

One action at a time per lot. AMQP has no "peek": a listing sees a message only by receiving
it, and a message one action holds is invisible to another. So each action takes an
in-process lock and, across processes (replicas, the command line), an exclusive queue
`<lot>.lock` that RabbitMQ deletes when the holder's connection closes, even after a crash.
Under both, `count` is the depth of the lot and a listing shows min(count, limit) messages.

Listing. Up to `limit` messages are taken with `basic.get` *without acknowledging them* and
handed back at once with one `basic.nack(multiple, requeue)`; RabbitMQ puts them back at
their places, so the order is kept. Only a short preview of each is kept in memory: the
message objects (and bodies) are dropped as the listing goes, except the last one, whose
delivery tag the final nack needs.

Replaying. One message at a time: `basic.get` from the lot, publish a copy to the exchange
with routing key `replay.<queue>` (bound to the consumed queue alone; persistent,
`mandatory`, waiting for the publisher confirm), and only then acknowledge the original. A
crash between the two steps leaves the message in both queues — a duplicate, never a loss;
processing is idempotent by orderId and an invalid message simply parks again. The copy
keeps the body, content type, message id and headers; the parking headers go (the consumer
adds fresh ones if it parks the message again) and the old reason stays as
`x-previous-rejection-reason`. A replay moves at most the number of messages parked when it
started, so messages that park again during the replay are not replayed in a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import AMQPError, ChannelLockedResource, ChannelNotFoundEntity, DeliveryError
from loguru import logger

from app.faults import FaultInjector
from app.messaging.dlq_shapes import (
    PREVIEW_BYTES,
    DlqListing,
    ParkedMessage,
    ReplayResult,
    replay_copy,
)
from app.messaging.topology import replay_key

__all__ = [
    "BROKER_ERRORS",
    "LOT_ROLES",
    "MAX_LIST",
    "DlqBusy",
    "DlqError",
    "DlqListing",
    "DlqOperations",
    "ParkedMessage",
    "ReplayResult",
    "UnknownLot",
    "replay_copy",
]

LOT_ROLES = ("stock-confirmed", "order-cancelled")  # the consumed queues in the order they are given
MAX_LIST = 200  # a listing receives every message it shows from the broker; more is a job for a replay
MAX_REPLAY = 1_000_000
# What an unreachable or failing broker raises (connection refused, timeouts, AMQP errors).
BROKER_ERRORS: tuple[type[BaseException], ...] = (AMQPError, OSError, TimeoutError)


class DlqError(Exception):
    """A parking-lot action that cannot be done (e.g. the consumed queue does not exist)."""


class DlqBusy(DlqError):
    """Another action on the same lot (in this process or another) did not finish in time."""


class UnknownLot(ValueError):
    """The named queue has no parking lot here."""


class DlqOperations:
    """List and replay the parking lots of the consumed queues."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        queues: Sequence[str],
        *,
        fault: str | None = None,
        timeout_s: float = 10.0,
        preview_bytes: int = PREVIEW_BYTES,
        lock_wait_s: float | None = None,
    ) -> None:
        if not queues:
            raise ValueError("at least one consumed queue")
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.queues = tuple(queues)
        self.timeout_s = timeout_s
        self.preview_bytes = preview_bytes
        self.lock_wait_s = timeout_s if lock_wait_s is None else lock_wait_s
        self._fault_spec = fault
        self._locks = {queue: asyncio.Lock() for queue in self.queues}

    @classmethod
    def from_settings(cls, settings: Any) -> DlqOperations:
        return cls(
            settings.amqp_url,
            settings.rabbitmq_publish_exchange,
            (settings.rabbitmq_consume_queue, settings.rabbitmq_cancel_queue),
            fault=settings.payment_fault_inject,
        )

    @property
    def queue(self) -> str:
        """The default lot's consumed queue (stock-confirmed)."""
        return self.queues[0]

    def resolve(self, queue: str | None) -> str:
        """The consumed queue named by `queue` (by role, its own name or its lot's); the default when None."""
        if queue is None:
            return self.queues[0]
        for role, name in zip(LOT_ROLES, self.queues, strict=False):
            if queue in (role, name, dlq_of(name)):
                return name
        if queue in self.queues:
            return queue
        raise UnknownLot(f"queue must be one of {', '.join(LOT_ROLES[: len(self.queues)])} (or a queue's name)")

    @asynccontextmanager
    async def _session(self, queue: str) -> AsyncIterator[AbstractConnection]:
        """A connection holding this lot's locks, in this process and across processes."""
        try:
            async with asyncio.timeout(self.lock_wait_s):
                await self._locks[queue].acquire()
        except TimeoutError:
            raise DlqBusy(f"another action on {dlq_of(queue)} is running; try again") from None
        try:
            connection = await aio_pika.connect(
                self.amqp_url, timeout=self.timeout_s, client_properties={"connection_name": "payment-service dlq"}
            )
            try:
                await self._hold_lot(connection, queue)
                yield connection
            finally:
                await connection.close()
        finally:
            self._locks[queue].release()

    async def _hold_lot(self, connection: AbstractConnection, queue: str) -> None:
        """Declare `<lot>.lock` exclusive to this connection, waiting while another holds it."""
        deadline = asyncio.get_running_loop().time() + self.lock_wait_s
        while True:
            channel = await connection.channel()
            try:
                await channel.declare_queue(
                    f"{dlq_of(queue)}.lock", exclusive=True, auto_delete=True, timeout=self.timeout_s
                )
                return
            except ChannelLockedResource:
                # The failed declare closed the channel; the next try opens another.
                if asyncio.get_running_loop().time() > deadline:
                    raise DlqBusy(f"another process is working on {dlq_of(queue)}; try again") from None
                await asyncio.sleep(0.1)

    async def _existing(
        self, connection: AbstractConnection, name: str
    ) -> tuple[AbstractChannel, AbstractQueue | None]:
        """A passive declare: never creates the queue nor argues about its arguments."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            return channel, await channel.declare_queue(name, passive=True, timeout=self.timeout_s)
        except ChannelNotFoundEntity:
            # A failed passive declare closes the channel; give the caller a fresh one.
            return await connection.channel(publisher_confirms=True, on_return_raises=True), None

    async def count(self, queue: str | None = None) -> int:
        name = self.resolve(queue)
        async with self._session(name) as connection:
            _, lot = await self._existing(connection, dlq_of(name))
            return _depth(lot)

    async def list(self, limit: int = 100, queue: str | None = None) -> DlqListing:
        """Up to `limit` parked messages, oldest first, without removing any."""
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be between 1 and {MAX_LIST}")
        name = self.resolve(queue)
        async with self._session(name) as connection:
            _, lot = await self._existing(connection, dlq_of(name))
            if lot is None:
                return DlqListing(dlq_of(name), 0, [])
            depth = _depth(lot)
            shown: list[ParkedMessage] = []
            last: AbstractIncomingMessage | None = None
            try:
                while len(shown) < min(limit, depth):
                    message = await lot.get(no_ack=False, fail=False, timeout=self.timeout_s)
                    if message is None:
                        break
                    shown.append(ParkedMessage.of(message, self.preview_bytes))
                    last = message  # the earlier ones (and their bodies) are free to go
            finally:
                if last is not None:
                    # One nack for all: back to their places, in order.
                    await last.nack(multiple=True, requeue=True)
            return DlqListing(dlq_of(name), max(depth, len(shown)), shown)

    async def replay(self, limit: int | None = None, queue: str | None = None) -> ReplayResult:
        """Send up to `limit` (default: all that are parked now) messages back to their consumed queue."""
        if limit is not None and not 1 <= limit <= MAX_REPLAY:
            raise ValueError(f"limit must be between 1 and {MAX_REPLAY}")
        name = self.resolve(queue)
        fault = FaultInjector(self._fault_spec)
        async with self._session(name) as connection:
            channel, lot = await self._existing(connection, dlq_of(name))
            if lot is None:
                return ReplayResult(dlq_of(name), name, 0, 0)
            _, target = await self._existing(connection, name)
            if target is None:
                raise DlqError(f"the consumed queue {name} does not exist; start the service first")
            budget = _depth(lot) if limit is None else min(limit, _depth(lot))
            replayed = await self._move(channel, lot, name, budget, fault)
            _, after = await self._existing(connection, dlq_of(name))
            remaining = _depth(after)
        logger.info(
            "replayed {replayed} parked messages from {dlq} to {queue}",
            replayed=replayed,
            dlq=dlq_of(name),
            queue=name,
            remaining=remaining,
        )
        return ReplayResult(dlq_of(name), name, replayed, remaining)

    async def _move(
        self, channel: AbstractChannel, lot: AbstractQueue, queue: str, budget: int, fault: FaultInjector
    ) -> int:
        exchange = await channel.get_exchange(self.exchange, ensure=False)
        replayed = 0
        while replayed < budget:
            message = await lot.get(no_ack=False, fail=False, timeout=self.timeout_s)
            if message is None:
                break
            try:
                # Returns once the broker confirmed the copy; raises if it was refused or unroutable.
                await exchange.publish(
                    replay_copy(message), routing_key=replay_key(queue), mandatory=True, timeout=self.timeout_s
                )
            except DeliveryError:
                await message.nack(requeue=True)
                raise DlqError(
                    f"nothing is bound to {replay_key(queue)} on {self.exchange}; start the service, which binds it"
                ) from None
            except ChannelNotFoundEntity:
                # The channel is closed: the broker puts the original back by itself.
                raise DlqError(f"the exchange {self.exchange} does not exist; start the service first") from None
            except BaseException:
                # The original stays parked (closing the channel would requeue it as well).
                if not channel.is_closed:
                    await message.nack(requeue=True)
                raise
            fault.hit("replay_after_publish")
            await message.ack()
            replayed += 1
        return replayed


def dlq_of(queue: str) -> str:
    """The parking lot of a consumed queue."""
    return f"{queue}.dlq"


def _depth(queue: AbstractQueue | None) -> int:
    if queue is None or queue.declaration_result is None:
        return 0
    return int(queue.declaration_result.message_count or 0)
