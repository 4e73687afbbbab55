"""Where a message enters: the RabbitMQ topology, the stock-confirmed subscriber, the outcome
publishers and the parking lot (`<queue>.dlq`).

The subscriber and publisher decorators define the event contract and the AsyncAPI
document. Messages are acknowledged by hand, only after the outcome is recorded and its
publication confirmed by the broker (or owed, recorded in the database for the reconciler).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faststream import BaseMiddleware
from faststream.middlewares import AckPolicy
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitMessage, RabbitQueue
from faststream.rabbit.publisher.usecase import RabbitPublisher
from faststream.rabbit.schemas import Channel
from loguru import logger
from pydantic import ValidationError

from app.config import Settings
from app.domain import Disposition, Payment, PaymentStatus
from app.messaging.events import (
    CONSUMED_ROUTING_KEY,
    FAILED_ROUTING_KEY,
    SUCCEEDED_ROUTING_KEY,
    OrderPaymentFailedEvent,
    OrderPaymentSucceededEvent,
    OrderStockConfirmedEvent,
    outcome_event,
)
from app.faults import FaultInjector
from app.service.payments import PaymentService
from app.observability.metrics import PaymentMetrics

REJECTION_HEADER = "x-rejection-reason"


@dataclass(frozen=True)
class Topology:
    exchange: RabbitExchange
    queue: RabbitQueue
    dlq: RabbitQueue

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            exchange=RabbitExchange(settings.rabbitmq_publish_exchange, type=ExchangeType.TOPIC, durable=True),
            # A plain durable classic queue with no arguments, as operators declare it.
            queue=RabbitQueue(settings.rabbitmq_consume_queue, durable=True, routing_key=CONSUMED_ROUTING_KEY),
            dlq=RabbitQueue(settings.dlq_name, durable=True),
        )


class InvalidEvent(Exception):
    """A consumed message that cannot become a payment; it is parked, never charged."""

    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


def describe_validation_error(error: ValidationError) -> InvalidEvent:
    """A short reason naming the first bad field, without echoing values (no card data)."""
    problems = error.errors(include_url=False, include_input=False)
    first = problems[0]
    kind = first["type"]
    location = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if kind == "json_invalid":
        return InvalidEvent(f"invalid JSON: {first.get('ctx', {}).get('error', message)}", "invalid_json")
    if kind in ("model_type", "dict_type", "model_attributes_type") and not location:
        return InvalidEvent("the event is not a JSON object", "not_an_object")
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    category = "missing_field" if kind == "missing" else "invalid_value"
    return InvalidEvent(f"{location or 'event'}: {message}{more}", category)


async def decode_stock_confirmed(message: RabbitMessage) -> OrderStockConfirmedEvent:
    """Decode the body as JSON whatever its content type (the Kotlin publisher sends none)."""
    try:
        return OrderStockConfirmedEvent.model_validate_json(message.body)
    except ValidationError as error:
        raise describe_validation_error(error) from None


class ParkingLot:
    """Moves unprocessable messages to `<queue>.dlq` with their original body and a reason."""

    def __init__(self, broker: RabbitBroker, topology: Topology, metrics: PaymentMetrics) -> None:
        self.broker = broker
        self.topology = topology
        self.metrics = metrics

    async def park(self, message: RabbitMessage, problem: InvalidEvent) -> None:
        headers: dict[str, Any] = {
            key: value for key, value in (message.headers or {}).items() if not key.startswith("x-rejection")
        }
        headers[REJECTION_HEADER] = problem.reason
        headers["x-rejection-category"] = problem.category
        headers["x-rejected-at"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers["x-original-queue"] = self.topology.queue.name
        await self.broker.publish(
            message.body,
            queue=self.topology.dlq,
            persist=True,
            mandatory=True,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
        )
        self.metrics.parked.labels(problem.category).inc()
        logger.error(
            "parked message in {dlq}: {reason}",
            dlq=self.topology.dlq.name,
            reason=problem.reason,
            category=problem.category,
            message_id=message.message_id,
        )


def parking_middleware(parking: ParkingLot) -> type[BaseMiddleware]:
    class ParkInvalidEvents(BaseMiddleware):
        async def consume_scope(self, call_next, msg):  # noqa: ANN001, ANN201
            try:
                return await call_next(msg)
            except InvalidEvent as problem:
                await parking.park(msg, problem)
                await msg.ack()
                return None

    return ParkInvalidEvents


class PublishedMarks:
    """Records "outcome confirmed by the broker" in the database in batches, off the hot path.

    A mark lost in a crash only means the reconciler publishes that outcome once more, with
    the same eventId."""

    def __init__(self, mark: Any, interval_s: float = 0.2, batch: int = 500) -> None:
        self._mark = mark
        self._interval = interval_s
        self._batch = batch
        self._pending: list[int] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, payment_id: int) -> None:
        self._pending.append(payment_id)
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
        except Exception as error:  # noqa: BLE001 - the reconciler re-publishes on loss
            logger.warning("could not mark {n} outcomes as published: {error}", n=len(ids), error=error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class OutcomePublisher:
    """Publishes `payment.succeeded` / `payment.failed` persistently with publisher confirms."""

    def __init__(
        self,
        succeeded: RabbitPublisher,
        failed: RabbitPublisher,
        marks: PublishedMarks,
        metrics: PaymentMetrics,
    ) -> None:
        self.succeeded = succeeded
        self.failed = failed
        self.marks = marks
        self.metrics = metrics

    async def publish(self, payment: Payment) -> None:
        routing_key, body, event_id = outcome_event(payment)
        publisher = self.succeeded if routing_key == SUCCEEDED_ROUTING_KEY else self.failed
        # Returns once the broker confirmed the message (publisher confirms are on).
        event_key = str(event_id)
        await publisher.publish(body, content_type="application/json", message_id=event_key, correlation_id=event_key)
        self.metrics.labelled(self.metrics.published, routing_key).inc()
        self.marks.add(payment.id)
        logger.debug("published {routing_key}", routing_key=routing_key, payment_id=payment.id, order_id=payment.order_id)


def build_broker(settings: Settings, middlewares: tuple[Any, ...] = ()) -> RabbitBroker:
    return RabbitBroker(
        settings.amqp_url,
        # Bounded concurrency: at most this many unacknowledged messages per replica.
        default_channel=Channel(prefetch_count=settings.consumer_concurrency, publisher_confirms=True),
        # Stop waits for in-flight handlers this long; the rest stay unacked for another replica.
        graceful_timeout=settings.shutdown_grace_seconds,
        reconnect_interval=2.0,
        middlewares=middlewares,
        log_level=10,  # FastStream's per-message lines at DEBUG
        # No per-message dependency injection: the decoder validates the event once, and the
        # injected `RabbitMessage` would cost a worker-thread hop per message.
        apply_types=False,
        # Our own logger, so FastStream adds no stdout handler of its own (app.observability.logs routes it).
        logger=logging.getLogger("faststream.access.rabbit"),
        description="Foodies payment service: charges orders whose stock is confirmed.",
        # Documented server, independent of the local environment.
        specification_url="amqp://foodies-rabbitmq:5672/",
    )


def declare_publishers(broker: RabbitBroker, topology: Topology) -> tuple[RabbitPublisher, RabbitPublisher]:
    succeeded = broker.publisher(
        exchange=topology.exchange,
        routing_key=SUCCEEDED_ROUTING_KEY,
        persist=True,
        mandatory=False,
        schema=OrderPaymentSucceededEvent,
        title=f"{topology.exchange.name}:{SUCCEEDED_ROUTING_KEY}",
        description="The buyer was charged; the order moves to Paid.",
    )
    failed = broker.publisher(
        exchange=topology.exchange,
        routing_key=FAILED_ROUTING_KEY,
        persist=True,
        mandatory=False,
        schema=OrderPaymentFailedEvent,
        title=f"{topology.exchange.name}:{FAILED_ROUTING_KEY}",
        description="The charge failed; the order is cancelled.",
    )
    return succeeded, failed


def register_subscriber(
    broker: RabbitBroker,
    topology: Topology,
    service: PaymentService,
    outcomes: OutcomePublisher,
    metrics: PaymentMetrics,
    faults: FaultInjector,
    parking: ParkingLot,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    @broker.subscriber(
        topology.queue,
        topology.exchange,
        ack_policy=AckPolicy.MANUAL,
        decoder=decode_stock_confirmed,
        title=f"{topology.queue.name}:{CONSUMED_ROUTING_KEY}",
        description="Stock is reserved for an order: charge the buyer once and publish the outcome.",
    )
    async def on_stock_confirmed(event: OrderStockConfirmedEvent) -> None:
        # The broker runs without per-message dependency injection (apply_types=False): the
        # decoder already validated the event, and the message comes from FastStream's context.
        message: RabbitMessage = broker.context.get_local("message")
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            with logger.contextualize(event_id=event.event_id, order_id=event.order_id):
                logger.debug("received", redelivered=message.raw_message.redelivered)
                result = await service.process(event.to_request())
                payment = result.payment
                _log_result(result.disposition, payment, started)
                metrics.payment_done(result.disposition, payment)
                if result.should_publish:
                    await outcomes.publish(payment)
                    faults.hit("after_publish")
                faults.hit("before_ack")
                await message.ack()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await _after_failure(message, error, parking, stopping())
        finally:
            metrics.in_flight.dec()
            metrics.processing_seconds.observe(time.perf_counter() - started)


async def _after_failure(message: RabbitMessage, error: Exception, parking: ParkingLot, stopping: bool) -> None:
    """An unexpected fault (outages are waited out below this level): the first time, the
    message goes back to the queue after a pause; if it fails again on redelivery it is
    parked with the reason, so that one poison message cannot cycle forever or hold up the
    queue. While the service stops, nothing is parked: another replica gets the message."""
    if message.raw_message.redelivered and not stopping:
        logger.opt(exception=error).error("processing failed again on redelivery; parking the message")
        try:
            await parking.park(message, InvalidEvent(f"processing failed: {type(error).__name__}: {error}", "processing_error"))
            await message.ack()
            return
        except Exception:  # noqa: BLE001 - the broker is gone: it redelivers later
            logger.warning("could not park the message; it goes back to the queue")
    else:
        logger.opt(exception=error).error("processing failed; the message goes back to the queue")
    await asyncio.sleep(1.0)  # no hot loop on a persistent fault
    with suppress(Exception):
        await message.nack(requeue=True)


def _log_result(disposition: Disposition, payment: Payment, started: float) -> None:
    context = {
        "payment_id": payment.id,
        "status": payment.status.value,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if disposition is Disposition.IN_PROGRESS:
        logger.info("payment in progress elsewhere; its owner publishes the outcome", **context)
    elif disposition is Disposition.ALREADY_PROCESSED:
        logger.info(
            "already processed; re-publishing the stored outcome",
            failure_code=payment.failure_code.value if payment.failure_code else None,
            **context,
        )
    elif payment.status is PaymentStatus.SUCCEEDED:
        logger.info("payment succeeded", **context)
    else:
        logger.warning(
            "payment failed: {reason}",
            reason=payment.failure_reason,
            failure_code=payment.failure_code.value if payment.failure_code else None,
            **context,
        )
