"""The ASGI application: FastStream's app (broker lifecycle, AsyncAPI) in front of our HTTP routes."""

from __future__ import annotations

from typing import Any

from aiormq.exceptions import AMQPConnectionError
from faststream.asgi import AsgiFastStream

from app.backoff import patiently


class PaymentApp(AsgiFastStream):
    """Every HTTP request that is not one of FastStream's own exact routes goes to `http`."""

    http: Any = None
    components: Any = None

    async def _start_broker(self) -> None:
        # FastStream starts the broker once, after the HTTP side is up, and offers no public
        # hook to retry that start; wrapping this one call lets the service wait out a
        # RabbitMQ that is not there yet (readiness answers 503 meanwhile) instead of dying.
        await patiently(
            super()._start_broker,
            what="RabbitMQ",
            retry_on=lambda error: isinstance(error, (OSError, AMQPConnectionError)),
            initial_s=0.5,
        )

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.http is not None:
            await self.http(scope, receive, send)
            return
        await super().not_found(scope, receive, send)
