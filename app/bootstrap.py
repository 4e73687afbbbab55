"""The app factory: all wiring in one place.

`create_app(settings)` builds one ASGI application that runs the RabbitMQ broker in its
lifespan and serves the HTTP routes. Start-up order: migrations (under an advisory lock) →
database pool → broker (exchange, queue, binding) → parking-lot queue → reconciler →
ready. Shutdown: not ready → stop consuming and let in-flight payments finish (grace
period) → flush → close.

`app` at module level is what `faststream docs gen app.bootstrap:app` reads.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiormq.exceptions import AMQPConnectionError
from faststream.asgi import AsgiFastStream
from faststream.asgi.factories import AsyncAPIRoute
from faststream.rabbit import RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.specification import AsyncAPI
from loguru import logger

from app.http.auth import Authenticator
from app.config import Settings, load_settings
from app.messaging.dlq import DlqOperations
from app.gateway import RetryingCharger, RetryPolicy, SimulatedGateway
from app.http.routes import Health, create_http_app
from app.messaging.legacy import (
    OutcomePublisher,
    ParkingLot,
    PublishedMarks,
    Topology,
    build_broker,
    declare_publishers,
    parking_middleware,
    register_subscriber,
)
from app.persistence.ledger import PaymentLedger
from app.persistence.migrate import migrate
from app.persistence.repository import PaymentRepository, make_engine
from app.service.reconciler import Reconciler
from app.faults import FaultInjector
from app.service.payments import PaymentService
from app.observability.metrics import ChargeTelemetry, PaymentMetrics
from app.observability.tracing import broker_middleware, instrument_charger, provider_from_settings, shutdown_tracing


class PaymentApp(AsgiFastStream):
    """FastStream's ASGI app, with every HTTP request that is not one of its own exact
    routes (the AsyncAPI page) handed to the Starlette router."""

    http: Any = None

    async def _start_broker(self) -> None:
        """Connect to RabbitMQ, waiting it out if it is not there yet: the HTTP probes already
        answer (readiness 503) and the process does not need a restart to recover."""
        delay = 0.5
        while True:
            try:
                await super()._start_broker()
                return
            except (OSError, AMQPConnectionError) as error:
                for broker in self.brokers:
                    broker._connection = None  # start from scratch on the next try
                logger.warning(
                    "RabbitMQ is not reachable ({error}); retrying in {delay:.1f} s",
                    error=str(error) or type(error).__name__,
                    delay=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.http is not None:
            await self.http(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


@dataclass
class Components:
    """Everything the app wired, for tests and tooling."""

    settings: Settings
    broker: RabbitBroker
    topology: Topology
    metrics: PaymentMetrics
    ledger: PaymentLedger
    gateway: SimulatedGateway
    service: PaymentService
    outcomes: OutcomePublisher
    marks: PublishedMarks
    reconciler: Reconciler
    health: Health
    repository: PaymentRepository | None = None
    auth: Authenticator | None = None
    dlq: DlqOperations | None = None


def create_app(
    settings: Settings | None = None,
    *,
    gateway: SimulatedGateway | None = None,
    tracer_provider: Any | None = None,
) -> PaymentApp:
    settings = settings or load_settings()
    metrics = PaymentMetrics()
    topology = Topology.from_settings(settings)
    faults = FaultInjector(settings.payment_fault_inject)

    # Tracing is on with OTEL_EXPORTER_OTLP_ENDPOINT (or a provider given by a test); off, it costs nothing.
    tracer = tracer_provider or provider_from_settings(settings)
    tracing = (broker_middleware(tracer),) if tracer is not None else ()
    prometheus = RabbitPrometheusMiddleware(registry=metrics.registry, app_name=settings.otel_service_name)
    broker = build_broker(settings, middlewares=(*tracing, prometheus))
    parking = ParkingLot(broker, topology, metrics)
    broker.add_middleware(parking_middleware(parking))

    ledger = PaymentLedger(settings.postgres_dsn(), pool_size=settings.db_pool_size)
    gateway = gateway or SimulatedGateway(settings.payment_delay_ms, settings.payment_always_succeed)
    charger = RetryingCharger(
        gateway,
        RetryPolicy(
            max_attempts=settings.payment_retry_max_attempts,
            timeout_s=settings.payment_gateway_timeout_ms / 1000,
            base_delay_s=settings.payment_retry_base_delay_ms / 1000,
            max_delay_s=settings.payment_retry_max_delay_ms / 1000,
        ),
        ChargeTelemetry(metrics),
    )
    service = PaymentService(
        ledger, instrument_charger(charger, tracer), lease_s=settings.payment_lease_seconds, faults=faults
    )
    succeeded, failed = declare_publishers(broker, topology)
    marks = PublishedMarks(ledger.mark_published)
    outcomes = OutcomePublisher(succeeded, failed, marks, metrics)
    health = Health(database=ledger.ping, broker=lambda: broker.ping(timeout=2.0))
    register_subscriber(broker, topology, service, outcomes, metrics, faults, parking, lambda: health.stopping)
    reconciler = Reconciler(
        ledger,
        service,
        outcomes,
        metrics,
        interval_s=settings.reconcile_interval_seconds,
        lease_s=settings.payment_lease_seconds,
        concurrency=settings.consumer_concurrency,
    )
    components = Components(
        settings, broker, topology, metrics, ledger, gateway, service, outcomes, marks, reconciler, health
    )

    def repository() -> PaymentRepository:
        if components.repository is None:
            raise RuntimeError("the service is not started")
        return components.repository

    app = PaymentApp(
        broker,
        specification=AsyncAPI(
            title="Foodies payment service",
            version="1.0.0",
            description=(
                "Consumes OrderStockConfirmedEvent, charges the buyer once per order, and publishes "
                "payment.succeeded or payment.failed. Unprocessable messages are parked in "
                f"`{topology.dlq.name}` with an `x-rejection-reason` header."
            ),
        ),
        asyncapi_path=AsyncAPIRoute("/docs/asyncapi", try_it_out_path=None),
    )
    components.auth = Authenticator.from_settings(settings)
    components.dlq = DlqOperations.from_settings(settings)
    app.http = create_http_app(
        health=health, metrics=metrics, repository=repository, auth=components.auth, dlq=components.dlq
    )
    app.components = components  # type: ignore[attr-defined]

    @app.on_startup
    async def prepare_database() -> None:
        logger.info("starting payment service", settings=settings.summary())
        if components.auth.enabled:
            logger.info("admin API authentication on", **components.auth.describe())
        else:
            logger.warning(
                "admin API authentication is off: /payments and /admin answer anyone; "
                "set ADMIN_TOKEN or AUTH_ISSUER and AUTH_AUDIENCE"
            )
        await _wait_for(lambda: migrate(settings.sqlalchemy_url()), "PostgreSQL")
        logger.info("database migrations applied")
        await ledger.open()
        components.repository = PaymentRepository(make_engine(settings.sqlalchemy_url(), pool_size=2))

    @app.after_startup
    async def finish_startup() -> None:
        # The broker has declared the exchange, the queue and its binding by now.
        await broker.declare_queue(topology.dlq)
        marks.start()
        reconciler.start()
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise stall the event loop for a few hundred ms.
        gc.collect()
        gc.freeze()
        health.started = True
        logger.info(
            "ready: consuming {queue}",
            queue=topology.queue.name,
            dlq=topology.dlq.name,
            concurrency=settings.consumer_concurrency,
        )

    @app.on_shutdown
    async def stop_taking_work() -> None:
        health.stopping = True
        logger.info("shutting down: finishing in-flight payments", grace_seconds=settings.shutdown_grace_seconds)
        await reconciler.stop()

    @app.after_shutdown
    async def release_resources() -> None:
        await marks.stop()
        await ledger.close()
        if components.repository is not None:
            await components.repository.engine.dispose()
        if tracer is not None and tracer_provider is None:
            await shutdown_tracing(tracer)
        logger.info("shutdown complete")

    return app


async def _wait_for(step: Any, what: str) -> None:
    """Run a start-up step, retrying with backoff while its server is unreachable."""
    delay = 0.5
    while True:
        try:
            await step()
            return
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.CannotConnectNowError) as error:
            logger.warning(
                "{what} is not reachable ({error}); retrying in {delay:.1f} s",
                what=what,
                error=str(error) or type(error).__name__,
                delay=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _default_app() -> PaymentApp:
    try:
        return create_app()
    except Exception:  # noqa: BLE001 - a bad environment must not break `docs gen` with defaults
        return create_app(Settings.model_construct())


app = _default_app()
