"""Start-up and shutdown, step by step, in the order FastStream's lifespan hooks call them.

Start-up: migrations if the schema is behind (under an advisory lock) → database pool →
broker (the subscribers declare the exchange, their queues and bindings) → parking lots and
replay bindings → the outcome connection → published marks, reconciler, consumer watch,
readiness → ready. Shutdown: not ready → stop consuming, let in-flight payments finish
(grace period) → flush the marks → close.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import asyncpg
from loguru import logger

from app import __version__
from app.backoff import patiently
from app.messaging.broker import broker_unreachable
from app.observability.tracing import shutdown_tracing
from app.persistence.schema_version import at_head

if TYPE_CHECKING:
    from app.bootstrap import Components


class Lifecycle:
    """Start-up and shutdown steps, in order (FastStream's lifespan hooks call them)."""

    def __init__(self, components: Components, owns_tracer: bool) -> None:
        self.c = components
        self.owns_tracer = owns_tracer

    async def prepare_database(self) -> None:
        c = self.c
        logger.info("starting payment service", version=__version__, settings=c.settings.summary())
        if c.auth.enabled:
            logger.info("admin API authentication on", **c.auth.describe())
        else:
            logger.warning(
                "admin API authentication is off: /payments and /admin answer anyone; "
                "set ADMIN_TOKEN or AUTH_ISSUER and AUTH_AUDIENCE"
            )
        await patiently(self._migrate_if_behind, what="PostgreSQL", retry_on=_database_unreachable, initial_s=0.5)
        await c.ledger.open()
        c.database_ready = True

    async def _migrate_if_behind(self) -> None:
        # Alembic (and with it SQLAlchemy) is loaded only when there is something to migrate.
        if await at_head(self.c.settings.postgres_dsn()):
            logger.info("database schema is current")
            return
        from app.persistence.migrate import migrate

        await migrate(self.c.settings.sqlalchemy_url())
        logger.info("database migrations applied")

    async def finish_startup(self) -> None:
        c = self.c
        # The subscribers have declared the exchange, their queues and bindings by now.
        for queue, routing_key in c.topology.bindings():
            declared = await c.broker.declare_queue(queue)
            await declared.bind(c.topology.exchange.name, routing_key=routing_key)
        # Outcomes go out on a connection of their own (a message consumed before this point
        # opens it itself); opened here so that a refused connection shows at start-up.
        await patiently(c.outbound.open, what="RabbitMQ (outcomes)", retry_on=broker_unreachable, initial_s=0.5)
        c.marks.start()
        c.reconciler.start()
        await c.watch.start()
        await c.health.start()
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise stall the event loop for a few hundred ms.
        gc.collect()
        gc.freeze()
        c.health.started = True
        logger.info(
            "ready: consuming {queues}",
            queues=[lot.queue.name for lot in c.topology.lots],
            concurrency=c.settings.consumer_concurrency,
        )

    async def stop_taking_work(self) -> None:
        self.c.health.stopping = True
        await self.c.watch.stop()
        logger.info("shutting down: finishing in-flight payments", grace_seconds=self.c.settings.shutdown_grace_seconds)
        await self.c.reconciler.stop()

    async def release_resources(self) -> None:
        c = self.c
        await c.health.stop()
        await c.marks.stop()
        await c.outbound.close()  # the handlers have finished (or been given up) by now
        await c.ledger.close()
        if c.repository is not None:
            await c.repository.engine.dispose()
        closer = getattr(c.gateway, "aclose", None)
        if closer is not None:
            await closer()
        if c.tracer is not None and self.owns_tracer:
            await shutdown_tracing(c.tracer)
        logger.info("shutdown complete")


def _database_unreachable(error: BaseException) -> bool:
    return isinstance(error, (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.CannotConnectNowError))
