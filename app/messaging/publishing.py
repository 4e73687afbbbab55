"""Publishing outcomes (`payment.succeeded`, `payment.failed`, `payment.refunded`) with
publisher confirms, and recording "confirmed by the broker" in the database in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Protocol

from loguru import logger

from app.domain import Payment
from app.messaging.events import outcome_event
from app.observability.metrics import PaymentMetrics


class PublishedMarks:
    """Records "outcome confirmed by the broker" off the hot path, many payments per statement.

    A mark lost in a crash only means the reconciler publishes that outcome once more, with
    the same eventId."""

    def __init__(
        self, mark: Callable[[list[tuple[int, str]]], Awaitable[None]], interval_s: float = 0.2, batch: int = 500
    ) -> None:
        self._mark = mark
        self._interval = interval_s
        self._batch = batch
        self._pending: list[tuple[int, str]] = []  # (payment id, the status whose outcome was confirmed)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, payment_id: int, status: str) -> None:
        self._pending.append((payment_id, status))
        if len(self._pending) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="published-marks")

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        ids, self._pending = self._pending, []
        try:
            await self._mark(ids)
        except Exception as error:  # noqa: BLE001 - the reconciler re-publishes what was not marked
            logger.warning("could not mark {n} outcomes as published: {error}", n=len(ids), error=error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class OutcomeSink(Protocol):
    """Where outcome events go (app/messaging/outbound.py: the outcomes' own AMQP channel)."""

    async def send(self, routing_key: str, body: bytes, event_id: str) -> None:
        """Publish persistently and return once the broker confirmed; raise otherwise."""


class OutcomePublisher:
    """Publishes the outcome event of a final payment, persistently, and waits for the broker's
    confirm. The AsyncAPI document describes these messages through the publishers declared
    in the contract module; the messages themselves go out through `sink`."""

    def __init__(self, sink: OutcomeSink, marks: PublishedMarks, metrics: PaymentMetrics) -> None:
        self.sink = sink
        self.marks = marks
        self.metrics = metrics

    async def publish(self, payment: Payment) -> bool:
        """Publish the payment's outcome, if it has one to announce; True if it was published."""
        if payment.announces is None:  # CANCELLED, or the charge of a cancelled order: nothing to say
            return False
        routing_key, body, event_id = outcome_event(payment)
        await self.sink.send(routing_key, body, str(event_id))
        self.metrics.labelled(self.metrics.published, routing_key).inc()
        self.marks.add(payment.id, payment.status.value)
        logger.debug(
            "published {routing_key}", routing_key=routing_key, payment_id=payment.id, order_id=payment.order_id
        )
        return True
