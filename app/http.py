"""The HTTP surface: admin routes, health probes and metrics (Starlette)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import StaticTokenAuth
from app.domain import Payment
from app.events import Instant, MoneyOut, PaymentMethodPayload, _CamelModel
from app.persistence.repository import PaymentRepository
from app.telemetry import PaymentMetrics

PROBE_PATHS = ("/healthz/startup", "/healthz/liveness", "/healthz/readiness", "/healthz", "/healthz/ready")
MAX_ORDER_ID = 2**63 - 1


@dataclass
class Health:
    """What the probes report; filled in by the app's lifecycle."""

    started: bool = False
    stopping: bool = False
    database: Callable[[], Awaitable[bool]] | None = None
    broker: Callable[[], Awaitable[bool]] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        async def check(probe: Callable[[], Awaitable[bool]] | None) -> bool:
            if probe is None:
                return False
            try:
                return await asyncio.wait_for(probe(), timeout=2.5)
            except Exception:  # noqa: BLE001 - any failure is DOWN
                return False

        database, broker = await asyncio.gather(check(self.database), check(self.broker))
        checks = {"database": "UP" if database else "DOWN", "rabbitmq": "UP" if broker else "DOWN"}
        return self.started and not self.stopping and database and broker, checks


class PaymentRecord(_CamelModel):
    """The payment record as the admin API returns it (CONTRACT.md §4)."""

    id: int
    order_id: int
    buyer_id: str
    amount: MoneyOut
    currency: str
    status: str
    payment_method: PaymentMethodPayload
    transaction_id: str | None
    failure_reason: str | None
    created_at: Instant
    processed_at: Instant | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentRecord:
        return cls(
            id=payment.id,
            order_id=payment.order_id,
            buyer_id=payment.buyer_id,
            amount=payment.amount,
            currency=payment.currency,
            status=payment.status.value,
            payment_method=PaymentMethodPayload.from_domain(payment.payment_method),
            transaction_id=payment.transaction_id,
            failure_reason=payment.failure_reason,
            created_at=payment.created_at,
            processed_at=payment.processed_at,
        )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def model_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def parse_positive_int64(raw: str, name: str) -> int | JSONResponse:
    if not raw.isascii() or not raw.isdigit():
        return error(400, f"{name} must be a positive 64-bit integer")
    value = int(raw)
    if value <= 0 or value > MAX_ORDER_ID:
        return error(400, f"{name} must be a positive 64-bit integer")
    return value


def create_http_app(
    *,
    health: Health,
    metrics: PaymentMetrics,
    repository: Callable[[], PaymentRepository],
    auth: StaticTokenAuth,
) -> Starlette:
    async def get_payment(request: Request) -> Response:
        order_id = parse_positive_int64(request.path_params["orderId"], "orderId")
        if isinstance(order_id, Response):
            return order_id
        payment = await repository().find_by_order_id(order_id)
        if payment is None:
            return error(404, f"no payment for order {order_id}")
        return model_response(PaymentRecord.of(payment))

    async def startup(_: Request) -> Response:
        if health.started:
            return JSONResponse({"status": "UP"})
        return JSONResponse({"status": "STARTING"}, status_code=503)

    async def liveness(_: Request) -> Response:
        return JSONResponse({"status": "UP"})

    async def readiness(_: Request) -> Response:
        ready, checks = await health.readiness()
        return JSONResponse({"status": "UP" if ready else "DOWN", "checks": checks}, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/payments/{orderId}", get_payment, methods=["GET"]),
            Route("/healthz/startup", startup, methods=["GET"]),
            Route("/healthz/liveness", liveness, methods=["GET"]),
            Route("/healthz", liveness, methods=["GET"]),
            Route("/healthz/readiness", readiness, methods=["GET"]),
            Route("/healthz/ready", readiness, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={
            404: lambda request, exc: error(404, "not found"),
            405: lambda request, exc: error(405, "method not allowed"),
            500: lambda request, exc: error(500, "internal error"),
        },
    )

    protected = ("/payments", "/admin")

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(protected):
            headers = dict(scope.get("headers") or [])
            decision = auth.check((headers.get(b"authorization") or b"").decode("latin-1") or None)
            if not decision.allowed:
                response = error(
                    decision.status,
                    decision.error,
                    headers={"WWW-Authenticate": 'Bearer realm="payment-service"'} if decision.status == 401 else None,
                )
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    guarded.starlette = app  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]
