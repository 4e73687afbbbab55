"""The per-message policy of both consumers: decode, park what cannot be read, hold orders
while the gateway is down, process, publish the outcome, acknowledge.

Messages are acknowledged by hand, only after the outcome is recorded and its publication
confirmed by the broker (or owed, recorded in the database for the reconciler). Nothing here
knows FastStream beyond the message's body/ack/nack, so it is tested without a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from faststream.rabbit import RabbitMessage
from loguru import logger

from app.domain import (
    FAILURE_REASONS,
    Disposition,
    FailureCode,
    Payment,
    PaymentRequest,
    PaymentStatus,
    ProcessingResult,
    Rejection,
)
from app.faults import FaultInjector
from app.messaging.decoding import Unreadable, decode_order_cancelled, decode_stock_confirmed
from app.messaging.parking import ParkingLot
from app.messaging.publishing import OutcomePublisher
from app.messaging.topology import Lot, Topology
from app.observability import fastlog
from app.observability.metrics import PaymentMetrics
from app.service.payments import PaymentDeferred, PaymentService
from app.service.ports import GatewayGate
from app.service.refunds import RefundService

# What became of a consumed message (`payment_consumed_total{result}`).
ACKED, PARKED, REQUEUED = "acked", "parked", "requeued"


class Released(Exception):
    """The service is stopping while it holds a message for the gateway: give it back."""


@dataclass
class Consumers:
    payments: PaymentService
    refunds: RefundService
    outcomes: OutcomePublisher
    parking: ParkingLot
    topology: Topology
    metrics: PaymentMetrics
    faults: FaultInjector
    gate: GatewayGate
    max_event_bytes: int
    max_wait_s: float
    retry_pause_s: float = 10.0
    stopping: Callable[[], bool] = lambda: False

    async def stock_confirmed(self, message: RabbitMessage) -> None:
        lot = self.topology.stock_confirmed
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            request = decode_stock_confirmed(message.body, self.max_event_bytes)
            if isinstance(request, Unreadable):
                await self._park(message, lot, request)
                return
            if self.faults.fires("channel_error"):
                await _provoke_channel_error(message)
            with logger.contextualize(event_id=request.event_id, order_id=request.order_id):
                logger.debug("received", redelivered=message.raw_message.redelivered)
                result = await self._process(request)
                _log_result(result, started)
                self.metrics.payment_done(result.disposition, result.payment)
                if result.should_publish and await self._announce(result.payment):
                    self.faults.hit("after_publish")
                self.faults.hit("before_ack")
                await message.ack()
                self._consumed(lot, ACKED)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any fault: requeue once, then park (never lose, never loop)
            await self._after_failure(message, lot, error)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.processing_seconds.observe(time.perf_counter() - started)

    async def order_cancelled(self, message: RabbitMessage) -> None:
        lot = self.topology.order_cancelled
        try:
            cancellation = decode_order_cancelled(message.body, self.max_event_bytes)
            if isinstance(cancellation, Unreadable):
                await self._park(message, lot, cancellation)
                return
            with logger.contextualize(order_id=cancellation.order_id):
                result = await self.refunds.cancel(cancellation)
                self.metrics.labelled(self.metrics.cancellations, result.case).inc()
                logger.info(
                    "order cancelled: {case}",
                    case=result.case,
                    status=result.payment.status.value,
                    payment_id=result.payment.id,
                    reason=cancellation.reason,
                )
                if result.payment.status is PaymentStatus.REFUNDED:
                    await self._announce(result.payment)
                await message.ack()
                self._consumed(lot, ACKED)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any fault: requeue once, then park (never lose, never loop)
            await self._after_failure(message, lot, error)

    async def _process(self, request: PaymentRequest) -> ProcessingResult:
        """Charge, holding the message (no lease, nothing failed) while the gateway is down."""
        deadline: float | None = None
        while True:
            if request.rejection is None and not self.gate.available:
                if deadline is None:
                    deadline = _deadline(request, self.max_wait_s)
                request = await self._hold(request, deadline)
            try:
                return await self.payments.process(request)
            except PaymentDeferred:
                # The breaker opened during this charge (hold again), or the retries ran out while
                # it stayed closed: pause, so that an outage that is just starting can show.
                if self.gate.available:
                    await asyncio.sleep(self.retry_pause_s)
                continue

    async def _hold(self, request: PaymentRequest, deadline: float) -> PaymentRequest:
        """Wait for the gateway; past the deadline the order fails with GATEWAY_ERROR so the saga ends."""
        logger.info("gateway unavailable: holding the order until it is back")
        self.metrics.held.inc()
        try:
            while not self.gate.available:
                remaining = deadline - time.time()
                if remaining <= 0:
                    reason = FAILURE_REASONS[FailureCode.GATEWAY_ERROR]
                    logger.warning("order waited too long for the gateway: failing it")
                    return replace(request, rejection=Rejection(FailureCode.GATEWAY_ERROR, reason))
                if self.stopping():
                    raise Released
                await self.gate.wait_until_callable(min(remaining, 1.0))
        finally:
            self.metrics.held.dec()
        return request

    async def _announce(self, payment: Payment) -> bool:
        """Publish the recorded outcome; True once the broker confirmed it. If it cannot be
        published now (a nack, the outcome connection down), the outcome stays owed in the
        database, where the reconciler finds and publishes it: the message is acknowledged all
        the same, so a broker restart never parks a message whose payment is settled."""
        try:
            return await self.outcomes.publish(payment)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the outcome is owed, not lost
            logger.warning(
                "outcome not confirmed by the broker; the reconciler publishes it: {error}",
                error=_describe(error),
                payment_id=payment.id,
            )
            return False

    def _consumed(self, lot: Lot, result: str) -> None:
        self.metrics.labelled(self.metrics.consumed, lot.queue.name, result).inc()

    async def _park(self, message: RabbitMessage, lot: Lot, problem: Unreadable) -> None:
        await self.parking.park(message, lot, problem.reason, problem.category)
        await message.ack()
        self._consumed(lot, PARKED)

    async def _after_failure(self, message: RabbitMessage, lot: Lot, error: Exception) -> None:
        """An unexpected fault (outages are waited out below this level): the first time, the
        message goes back to the queue after a pause; if it fails again on redelivery it is
        parked with the reason, so that one poison message cannot cycle forever or hold up the
        queue. While the service stops, nothing is parked: another replica gets the message."""
        if isinstance(error, Released):
            self._consumed(lot, REQUEUED)
            with suppress(Exception):
                await message.nack(requeue=True)
            return
        if message.raw_message.redelivered and not self.stopping():
            logger.opt(exception=error).error("processing failed again on redelivery; parking the message")
            try:
                reason = f"processing failed: {type(error).__name__}: {error}"
                await self.parking.park(message, lot, reason[:500], "processing_error")
                await message.ack()
                self._consumed(lot, PARKED)
                return
            except Exception:  # noqa: BLE001 - the broker is gone: it redelivers later
                logger.warning("could not park the message; it goes back to the queue")
        else:
            logger.opt(exception=error).error("processing failed; the message goes back to the queue")
        self._consumed(lot, REQUEUED)
        await asyncio.sleep(1.0)  # no hot loop on a persistent fault
        with suppress(Exception):
            await message.nack(requeue=True)


async def _provoke_channel_error(message: RabbitMessage) -> None:
    """Test-only: make the broker close the consumers' channel (a passive declare of a queue
    that does not exist), as a permission error would."""
    logger.warning("fault injection: provoking a channel error on the consumers' channel")
    with suppress(Exception):
        await message.raw_message.channel.queue_declare("payment.fault-injection.missing", passive=True)


def _describe(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - some client exceptions cannot render themselves
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _deadline(request: PaymentRequest, max_wait_s: float) -> float:
    """The order is held at most until max wait after its occurredAt — or after we received it,
    if that is later: occurredAt comes from another machine's clock, and an order delivered
    late (a backlog, a skewed clock) still gets its full wait for the gateway."""
    received = time.time()
    occurred = request.occurred_at.timestamp() if request.occurred_at is not None else received
    return max(occurred, received) + max_wait_s


def _log_result(result: ProcessingResult, started: float) -> None:
    """The line per payment: written straight as JSON when logging is the JSON sink
    (app/observability/fastlog.py), else through loguru; the same line either way."""
    level, message, fields = _result_line(result, started)
    if not fastlog.emit(level, message, __name__, fields):
        logger.log(level, "{}", message, **fields)  # the message as it is: a reason may hold braces


def _result_line(result: ProcessingResult, started: float) -> tuple[str, str, dict[str, Any]]:
    payment = result.payment
    context: dict[str, Any] = {
        "payment_id": payment.id,
        "status": payment.status.value,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    code = payment.failure_code.value if payment.failure_code else None
    if result.disposition is Disposition.IN_PROGRESS:
        return "INFO", "payment in progress elsewhere; its owner publishes the outcome", context
    if result.disposition is Disposition.ALREADY_PROCESSED:
        return "INFO", "already processed; re-publishing the stored outcome", {"failure_code": code, **context}
    if payment.status is PaymentStatus.SUCCEEDED:
        return "INFO", "payment succeeded", context
    if payment.status is PaymentStatus.REFUNDED:
        return "INFO", "payment refunded: the order was cancelled during the charge", context
    fields = {"reason": payment.failure_reason, "failure_code": code, **context}
    return "WARNING", f"payment failed: {payment.failure_reason}", fields
