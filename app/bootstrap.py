"""The composition root: every adapter is built and wired here, and nowhere else.

`build(settings)` returns the parts; tests pass seams (ledger, gateway, clock) instead of
patching objects after wiring. `create_app(settings)` puts the parts into one ASGI app whose
lifespan runs them, step by step as `app/lifecycle.py` says.

`faststream docs gen --factory app.bootstrap:create_app` generates the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from app import __version__
from app.asgi import PaymentApp
from app.config import Settings, load_settings
from app.faults import FaultInjector
from app.gateway import CircuitBreaker, CircuitState, RetryingCharger, RetryPolicy, gateway_from
from app.http.auth import Authenticator
from app.http.probes import Health, MetricsText, ProbeAnswers
from app.http.routes import create_http_app
from app.lifecycle import Lifecycle
from app.messaging.asyncapi import document_of
from app.messaging.broker import build_broker
from app.messaging.consumer import Consumers
from app.messaging.contract import declare_publishers, register
from app.messaging.dlq import DlqOperations
from app.messaging.outbound import OutcomeChannel
from app.messaging.parking import ParkingLot
from app.messaging.publishing import OutcomePublisher, PublishedMarks
from app.messaging.topology import Topology
from app.messaging.watch import ConsumerWatch
from app.observability.metrics import ChargeTelemetry, PaymentMetrics
from app.observability.tracing import broker_middleware, instrument_charger, provider_from_settings
from app.persistence.ledger import PaymentLedger
from app.service.payments import PaymentService
from app.service.reconciler import Reconciler
from app.service.refunds import RefundResult, RefundService

if TYPE_CHECKING:
    from app.persistence.repository import PaymentRepository


@dataclass
class Components:
    """Everything the service is made of, wired."""

    settings: Settings
    broker: RabbitBroker
    topology: Topology
    metrics: PaymentMetrics
    ledger: PaymentLedger
    gateway: Any
    breaker: CircuitBreaker
    payments: PaymentService
    refunds: RefundService
    outcomes: OutcomePublisher
    marks: PublishedMarks
    consumers: Consumers
    reconciler: Reconciler
    health: Health
    watch: ConsumerWatch
    auth: Authenticator
    dlq: DlqOperations
    tracer: Any = None
    outbound: Any = None  # the outcomes' own AMQP channel (OutcomeChannel, or a test's sink)
    repository: PaymentRepository | None = None
    database_ready: bool = False  # migrated and the ledger's pool open

    def admin_repository(self) -> PaymentRepository:
        """The admin API's read-only queries (SQLModel), built at the first admin request so that
        a service nobody queries never loads SQLAlchemy."""
        if self.repository is None:
            if not self.database_ready:
                raise RuntimeError("the service is not started")
            from app.persistence.repository import PaymentRepository, make_engine

            self.repository = PaymentRepository(make_engine(self.settings.sqlalchemy_url(), pool_size=2))
        return self.repository


def build(
    settings: Settings,
    *,
    ledger: PaymentLedger | None = None,
    gateway: Any = None,
    clock: Callable[[], float] = time.monotonic,
    tracer_provider: Any = None,
    outbound: Any = None,
) -> Components:
    metrics = PaymentMetrics()
    topology = Topology.from_settings(settings)
    faults = FaultInjector(settings.payment_fault_inject)
    # Tracing is on with OTEL_EXPORTER_OTLP_ENDPOINT (or a provider given by a test); off, it costs nothing.
    tracer = tracer_provider or provider_from_settings(settings)
    broker = _broker(settings, tracer)
    ledger = ledger or PaymentLedger(settings.postgres_dsn(), pool_size=settings.db_pool_size)
    gateway = gateway or gateway_from(settings)
    breaker = CircuitBreaker(
        open_seconds=settings.payment_circuit_open_seconds, clock=clock, on_change=metrics.circuit_state.set
    )
    charger = _charger(settings, gateway, breaker, metrics, tracer)
    lease_s = settings.payment_lease_seconds
    refunds = RefundService(ledger, charger, lease_s=lease_s, faults=faults, observe=metrics.refund_done)
    payments = PaymentService(ledger, charger, refunds, lease_s=lease_s, faults=faults, on_conflict=metrics.conflict)

    marks = PublishedMarks(ledger.mark_published)
    declare_publishers(broker, topology)  # the AsyncAPI document's outcome channels
    outbound = outbound or OutcomeChannel(settings.amqp_url, topology.exchange.name, tracer_provider=tracer)
    outcomes = OutcomePublisher(outbound, marks, metrics)
    watch = ConsumerWatch(broker, [lot.queue for lot in topology.lots])
    health = _health(ledger, broker, watch, breaker)
    consumers = Consumers(
        payments=payments,
        refunds=refunds,
        outcomes=outcomes,
        parking=ParkingLot(broker, topology, metrics),
        topology=topology,
        metrics=metrics,
        faults=faults,
        gate=breaker,
        max_event_bytes=settings.max_event_bytes,
        max_wait_s=settings.payment_max_wait_seconds,
        retry_pause_s=settings.payment_circuit_open_seconds,
        stopping=lambda: health.stopping,
    )
    register(broker, topology, consumers)
    reconciler = Reconciler(
        ledger,
        payments,
        refunds,
        outcomes.publish,
        metrics,
        breaker,
        interval_s=settings.reconcile_interval_seconds,
        lease_s=lease_s,
        max_wait_s=settings.payment_max_wait_seconds,
        concurrency=settings.consumer_concurrency,
    )
    return Components(
        settings=settings,
        broker=broker,
        topology=topology,
        metrics=metrics,
        ledger=ledger,
        gateway=gateway,
        breaker=breaker,
        payments=payments,
        refunds=refunds,
        outcomes=outcomes,
        marks=marks,
        consumers=consumers,
        reconciler=reconciler,
        health=health,
        watch=watch,
        auth=Authenticator.from_settings(settings),
        dlq=DlqOperations.from_settings(settings),
        tracer=tracer,
        outbound=outbound,
    )


def _broker(settings: Settings, tracer: Any) -> RabbitBroker:
    # No FastStream Prometheus middleware: the consumers count what they consume themselves
    # (payment_consumed_total), for a fraction of its cost per message.
    tracing = (broker_middleware(tracer),) if tracer is not None else ()
    return build_broker(settings, middlewares=tracing)


def _charger(settings: Settings, gateway: Any, breaker: CircuitBreaker, metrics: PaymentMetrics, tracer: Any) -> Any:
    """The gateway behind retries and the circuit breaker (and a `charge` span when tracing)."""
    policy = RetryPolicy(
        max_attempts=settings.payment_retry_max_attempts,
        timeout_s=settings.payment_gateway_timeout_ms / 1000,
        base_delay_s=settings.payment_retry_base_delay_ms / 1000,
        max_delay_s=settings.payment_retry_max_delay_ms / 1000,
    )
    return instrument_charger(RetryingCharger(gateway, policy, ChargeTelemetry(metrics), breaker=breaker), tracer)


def _health(ledger: Any, broker: RabbitBroker, watch: ConsumerWatch, breaker: CircuitBreaker) -> Health:
    return Health(
        database=ledger.ping,
        broker=lambda: broker.ping(timeout=2.0),
        consumers_ok=lambda: watch.healthy,
        gateway_state=lambda: "UP" if breaker.state is CircuitState.CLOSED else "DOWN",
    )


def specification(components: Components) -> AsyncAPI:
    lots = ", ".join(f"`{lot.dlq.name}`" for lot in components.topology.lots)
    return AsyncAPI(
        title="Foodies payment service",
        version=__version__,
        description=(
            "Consumes OrderStockConfirmedEvent and OrderCancelledEvent; charges the buyer once per order and "
            "publishes payment.succeeded or payment.failed; refunds a cancelled order's charge and publishes "
            f"payment.refunded. Unreadable messages are parked in {lots} with an `x-rejection-reason` header."
        ),
    )


class OperatorRefunds:
    """The admin route's and the command line's refund: the service's, announced on success."""

    def __init__(self, components: Components) -> None:
        self.components = components

    async def refund(self, order_id: int, reason: str | None) -> RefundResult:
        c = self.components
        return await c.refunds.refund(order_id, reason, c.outcomes.publish)


def create_app(settings: Settings | None = None, **seams: Any) -> PaymentApp:
    components = build(settings or load_settings(), **seams)
    app = PaymentApp(components.broker, specification=specification(components), asyncapi_path=None)
    lifecycle = Lifecycle(components, owns_tracer=seams.get("tracer_provider") is None)
    app.on_startup(lifecycle.prepare_database)
    app.after_startup(lifecycle.finish_startup)
    app.on_shutdown(lifecycle.stop_taking_work)
    app.after_shutdown(lifecycle.release_resources)

    app.http = create_http_app(
        health=components.health,
        metrics=components.metrics,
        repository=components.admin_repository,
        auth=components.auth,
        dlq=components.dlq,
        refunds=OperatorRefunds(components),
        settings=components.settings,
        asyncapi=lambda: document_of(app.schema),
    )
    app.probes = ProbeAnswers(components.health, MetricsText(components.metrics.registry))
    app.components = components
    return app


def refund_from_cli(settings: Settings, order_id: int, reason: str | None) -> int:
    """`payment-service refund ORDER_ID`: the operator's refund without the HTTP API (it uses
    the same ledger, gateway and `payment.refunded` publisher, and consumes nothing).
    Prints the payment record as JSON; exit 0 when refunded, 1 otherwise."""
    import json

    from app.http.schemas import PaymentRecord

    async def run() -> int:
        components = build(settings)
        await components.ledger.open()
        await components.broker.connect()
        try:
            await components.broker.declare_exchange(components.topology.exchange)
            await components.outbound.open()  # before the refund: an unreachable broker refunds nothing
            result = await OperatorRefunds(components).refund(order_id, reason)
        finally:
            await components.outbound.close()
            await components.broker.stop()
            await components.ledger.close()
            closer = getattr(components.gateway, "aclose", None)
            if closer is not None:
                await closer()
        record = PaymentRecord.of(result.payment).model_dump(mode="json", by_alias=True) if result.payment else None
        print(json.dumps({"outcome": result.outcome.value, "message": result.message, "payment": record}, indent=2))
        return 0 if result.outcome.value == "REFUNDED" else 1

    return asyncio.run(run())
