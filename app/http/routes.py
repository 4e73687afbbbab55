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

from app.http.auth import MISSING, Authenticator
from app.messaging.dlq import BROKER_ERRORS, MAX_LIST, DlqError, DlqOperations
from app.domain import Payment, PaymentStatus
from app.messaging.events import Instant, MoneyOut, PaymentMethodPayload, _CamelModel
from app.persistence.repository import PaymentRepository
from app.observability.metrics import PaymentMetrics

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


LIST_PARAMETERS = ("buyerId", "status", "limit", "offset")
MAX_OFFSET = 1_000_000
MAX_REPLAY = 1_000_000


def parse_bounded_int(raw: str, name: str, low: int, high: int) -> int | JSONResponse:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not low <= int(raw) <= high:
        return error(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def parse_query(request: Request, allowed: tuple[str, ...]) -> dict[str, str] | JSONResponse:
    """The query parameters once each, all of them known; 400 otherwise (typos do not pass)."""
    params = request.query_params
    for name in params.keys():
        if name not in allowed:
            return error(400, f"unknown parameter {name}; expected {', '.join(allowed)}")
        if len(params.getlist(name)) > 1:
            return error(400, f"{name} given more than once")
    return dict(params.items())


def parse_listing(request: Request) -> dict[str, Any] | JSONResponse:
    query = parse_query(request, LIST_PARAMETERS)
    if isinstance(query, Response):
        return query
    found: dict[str, Any] = {"buyer_id": None, "status": None, "limit": 50, "offset": 0}
    if "buyerId" in query:
        if not query["buyerId"] or len(query["buyerId"]) > 255:
            return error(400, "buyerId must be 1 to 255 characters")
        found["buyer_id"] = query["buyerId"]
    if "status" in query:
        if query["status"] not in PaymentStatus.__members__:
            return error(400, f"status must be one of {', '.join(PaymentStatus.__members__)}")
        found["status"] = PaymentStatus(query["status"])
    for name, key, low, high in (("limit", "limit", 1, 100), ("offset", "offset", 0, MAX_OFFSET)):
        if name in query:
            value = parse_bounded_int(query[name], name, low, high)
            if isinstance(value, Response):
                return value
            found[key] = value
    return found


def auth_failure(decision: Any) -> JSONResponse:
    """401 (with a WWW-Authenticate challenge, RFC 6750), 403 or 503, as a JSON body."""
    challenge = 'Bearer realm="payment-service"'
    if decision.status == 401 and decision is not MISSING:
        challenge += ', error="invalid_token"'
    elif decision.status == 403:
        challenge += ', error="insufficient_scope"'
    headers = {"WWW-Authenticate": challenge} if decision.status in (401, 403) else None
    return error(decision.status, decision.error, headers=headers)


def create_http_app(
    *,
    health: Health,
    metrics: PaymentMetrics,
    repository: Callable[[], PaymentRepository],
    auth: Authenticator,
    dlq: DlqOperations | None = None,
) -> Starlette:
    async def list_payments(request: Request) -> Response:
        listing = parse_listing(request)
        if isinstance(listing, Response):
            return listing
        payments = await repository().list(
            buyer_id=listing["buyer_id"], status=listing["status"], limit=listing["limit"], offset=listing["offset"]
        )
        items = [PaymentRecord.of(p).model_dump(mode="json", by_alias=True) for p in payments]
        return JSONResponse({"items": items, "limit": listing["limit"], "offset": listing["offset"]})

    async def one_payment(request: Request, parameter: str, find: Any, missing: str) -> Response:
        key = parse_positive_int64(request.path_params[parameter], parameter)
        if isinstance(key, Response):
            return key
        payment = await find(key)
        if payment is None:
            return error(404, f"{missing} {key}")
        return model_response(PaymentRecord.of(payment))

    async def get_payment_by_id(request: Request) -> Response:
        return await one_payment(request, "paymentId", lambda key: repository().find_by_id(key), "no payment with id")

    async def dlq_action(request: Request, default_limit: int | None, high: int) -> int | None | Response:
        if dlq is None:
            return error(404, "not found")
        query = parse_query(request, ("limit",))
        if isinstance(query, Response):
            return query
        if "limit" not in query:
            return default_limit
        return parse_bounded_int(query["limit"], "limit", 1, high)

    async def list_parked(request: Request) -> Response:
        limit = await dlq_action(request, 100, MAX_LIST)
        if isinstance(limit, Response):
            return limit
        try:
            listing = await dlq.list(limit or 100)  # type: ignore[union-attr]
        except BROKER_ERRORS as problem:
            return error(503, f"RabbitMQ unavailable: {type(problem).__name__}")
        return JSONResponse({**listing.to_json(), "limit": limit})

    async def replay_parked(request: Request) -> Response:
        limit = await dlq_action(request, None, MAX_REPLAY)
        if isinstance(limit, Response):
            return limit
        try:
            result = await dlq.replay(limit)  # type: ignore[union-attr]
        except DlqError as problem:
            return error(409, str(problem))
        except BROKER_ERRORS as problem:
            return error(503, f"RabbitMQ unavailable: {type(problem).__name__}")
        return JSONResponse(result.to_json())

    async def get_payment(request: Request) -> Response:
        return await one_payment(request, "orderId", lambda key: repository().find_by_order_id(key), "no payment for order")

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
            Route("/payments", list_payments, methods=["GET"]),
            Route("/payments/by-id/{paymentId}", get_payment_by_id, methods=["GET"]),
            Route("/payments/{orderId}", get_payment, methods=["GET"]),
            Route("/admin/dlq", list_parked, methods=["GET"]),
            Route("/admin/dlq/replay", replay_parked, methods=["POST"]),
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
            decision = await auth.check((headers.get(b"authorization") or b"").decode("latin-1") or None)
            if not decision.allowed:
                await auth_failure(decision)(scope, receive, send)
                return
        await app(scope, receive, send)

    guarded.starlette = app  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]
