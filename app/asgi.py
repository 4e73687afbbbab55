"""The ASGI application: FastStream's app (broker lifecycle, AsyncAPI) in front of our HTTP routes."""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiFastStream
from starlette.types import Receive, Scope, Send

from app.backoff import patiently
from app.http.probes import ProbeAnswers
from app.messaging.broker import broker_unreachable


class PaymentApp(AsgiFastStream):
    """Every HTTP request that is not one of FastStream's own exact routes goes to `http`,
    except the probes and the metrics scrape, which `probes` answers first.

    Pollers of those paths must cost little: the routed answer goes through FastStream's route
    list, the edge and Starlette's router for a body that is already cached. `probes` answers
    them directly, with the same bytes, and paces each client address (see
    `app/http/probes.py`).
    """

    http: Any = None
    probes: ProbeAnswers | None = None  # set by the composition root (bootstrap.create_app)
    components: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        probes = self.probes
        if probes is not None and scope["type"] == "http" and probes.handles(scope):
            try:
                answer = await probes.answer(scope)
            except Exception:  # noqa: BLE001 - the routed probe answers instead, through the edge's failure handling
                answer = None
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)

    async def _start_broker(self) -> None:
        # FastStream starts the broker once, after the HTTP side is up, and offers no public
        # hook to retry that start; wrapping this one call lets the service wait out a
        # RabbitMQ that is not there yet (readiness answers 503 meanwhile) instead of dying.
        await patiently(
            super()._start_broker,
            what="RabbitMQ",
            retry_on=broker_unreachable,
            initial_s=0.5,
        )

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.http is not None:
            await self.http(scope, receive, send)
            return
        await super().not_found(scope, receive, send)
