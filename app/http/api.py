"""The admin API (FastAPI): payments, refunds and the parking lots, described at /openapi.json.

Authentication and rate limiting happen before routing (see `edge`); the bearer scheme here
only documents them. Every error answer is {"error", "status"}; a malformed parameter or body
is a 400 with a short message that never echoes the input.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.domain import Payment, PaymentStatus
from app.http.edge import MAX_BODY_BYTES, error, failure_response
from app.http.openapi import DIGITS, ERRORS, OrderId, PaymentId, describe_api, validation_message
from app.http.schemas import (
    PRINTABLE,
    ParkingLotListing,
    PaymentPage,
    PaymentRecord,
    RefundRequest,
    ReplayOutcome,
    replay_request,
)
from app.messaging.dlq import (
    BROKER_ERRORS,
    LOT_ROLES,
    MAX_LIST,
    MAX_REPLAY,
    DlqBusy,
    DlqError,
    DlqOperations,
    UnknownLot,
    dlq_of,
)

if TYPE_CHECKING:  # the service layer's types; at run time outcomes are compared by their string values
    from app.service.refunds import RefundResult

MAX_OFFSET = 1_000_000
# RefundOutcome (a StrEnum of the service layer) -> HTTP status of the refund route.
REFUND_STATUS = {"NOT_FOUND": 404, "NOT_REFUNDABLE": 409, "DECLINED": 502, "UNAVAILABLE": 503}
BuyerId = Annotated[str | None, Query(alias="buyerId", min_length=1, max_length=255, pattern=PRINTABLE)]
ListLimit = Annotated[int, Field(ge=1, le=100), DIGITS]
Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET), DIGITS]
LotLimit = Annotated[int, Field(ge=1, le=MAX_LIST), DIGITS]
ReplayLimit = Annotated[int, Field(ge=1, le=MAX_REPLAY), DIGITS]


class PaymentReader(Protocol):
    async def find_by_id(self, payment_id: int) -> Payment | None: ...
    async def find_by_order_id(self, order_id: int) -> Payment | None: ...
    async def list(
        self, *, buyer_id: str | None, status: PaymentStatus | None, limit: int, offset: int
    ) -> list[Payment]: ...


class Refunds(Protocol):
    """The operator refund of the service layer (app.service.refunds)."""

    async def refund(self, order_id: int, reason: str | None) -> "RefundResult": ...


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def only(*names: str) -> Any:
    """A dependency refusing unknown or repeated query parameters, so a typo never passes as a default."""

    def check(request: Request) -> None:
        for name in request.query_params:
            if name not in names:
                expected = ", ".join(names) if names else "none"
                raise ApiError(400, f"unknown parameter {name[:40]!r}; expected {expected}")
            if len(request.query_params.getlist(name)) > 1:
                raise ApiError(400, f"{name} given more than once")

    return Depends(check)


def json_of(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def record(payment: Payment) -> Response:
    return json_of(PaymentRecord.of(payment))


def payments_router(repository: Callable[[], PaymentReader], refunds: Refunds | None) -> APIRouter:
    router = APIRouter(tags=["payments"], responses=ERRORS)

    @router.get("/payments", response_model=PaymentPage, dependencies=[only("buyerId", "status", "limit", "offset")])
    async def list_payments(
        buyer_id: BuyerId = None,
        status: Annotated[PaymentStatus | None, Query()] = None,
        limit: Annotated[ListLimit, Query()] = 50,
        offset: Annotated[Offset, Query()] = 0,
    ) -> Response:
        """Payments, newest first; optionally one buyer's and/or one status."""
        found = await repository().list(buyer_id=buyer_id, status=status, limit=limit, offset=offset)
        return json_of(PaymentPage(items=[PaymentRecord.of(p) for p in found], limit=limit, offset=offset))

    @router.get("/payments/by-id/{paymentId}", response_model=PaymentRecord, dependencies=[only()])
    async def payment_by_id(payment_id: Annotated[PaymentId, Path(alias="paymentId")]) -> Response:
        """One payment by its own id."""
        payment = await repository().find_by_id(payment_id)
        if payment is None:
            raise ApiError(404, f"no payment with id {payment_id}")
        return record(payment)

    @router.get("/payments/{orderId}", response_model=PaymentRecord, dependencies=[only()])
    async def payment_of_order(order_id: Annotated[OrderId, Path(alias="orderId")]) -> Response:
        """The payment of an order."""
        payment = await repository().find_by_order_id(order_id)
        if payment is None:
            raise ApiError(404, f"no payment for order {order_id}")
        return record(payment)

    @router.post(
        "/payments/{orderId}/refund",
        response_model=PaymentRecord,
        dependencies=[only()],
        responses={
            409: {"model": ERRORS[400]["model"], "description": "Not refundable (FAILED, CANCELLED, in progress)."},
            502: {"model": ERRORS[400]["model"], "description": "The gateway declined; the payment stays SUCCEEDED."},
        },
    )
    async def refund(
        order_id: Annotated[OrderId, Path(alias="orderId")],
        body: Annotated[RefundRequest | None, Body()] = None,
    ) -> Response:
        """Refund a SUCCEEDED payment in full (once; asking again for a REFUNDED one returns it)."""
        if refunds is None:
            raise ApiError(503, "refunds are not available")
        result = await refunds.refund(order_id, body.reason if body else None)
        if result.outcome == "REFUNDED" and result.payment is not None:
            return record(result.payment)
        raise ApiError(REFUND_STATUS.get(str(result.outcome), 500), result.message)

    return router


def parking_router(dlq: DlqOperations | None) -> APIRouter:
    router = APIRouter(tags=["parking lots"], responses=ERRORS)
    # The lots' names are settings: the document lists the ones this service has.
    names = LOT_ROLES if dlq is None else (*LOT_ROLES[: len(dlq.queues)], *dlq.queues, *map(dlq_of, dlq.queues))
    lot = Literal[names]  # type: ignore[valid-type]  # built from settings at start-up
    QueueName = Annotated[
        lot | None,
        Query(description="Whose parking lot: stock-confirmed (default), order-cancelled, or a queue's name."),
    ]
    ReplayRequest = replay_request(lot)

    def lots() -> DlqOperations:
        if dlq is None:
            raise ApiError(404, "not found")
        return dlq

    @router.get("/admin/dlq", response_model=ParkingLotListing, dependencies=[only("limit", "queue")])
    async def list_parked(limit: Annotated[LotLimit, Query()] = 100, queue: QueueName = None) -> Response:
        """The oldest parked messages of a lot (a preview of each), without removing any."""
        listing = await _parking(lambda: lots().list(limit, queue))
        return json_of(ParkingLotListing.model_validate({**listing.to_json(), "limit": limit}))

    @router.post("/admin/dlq/replay", response_model=ReplayOutcome, dependencies=[only("limit", "queue")])
    async def replay_parked(
        limit: Annotated[ReplayLimit | None, Query()] = None,
        queue: QueueName = None,
        body: Annotated[ReplayRequest | None, Body()] = None,  # type: ignore[valid-type]  # made at start-up
    ) -> Response:
        """Send parked messages back to their consumed queue, oldest first (default: all parked now).
        `limit` and `queue` may come in the query or in a JSON body, each in one place only."""
        if body is not None:
            for name, in_query, in_body in (("limit", limit, body.limit), ("queue", queue, body.queue)):
                if in_query is not None and in_body is not None:
                    raise ApiError(400, f"{name} given both in the query and in the body")
            limit = limit if limit is not None else body.limit
            queue = queue if queue is not None else body.queue
        result = await _parking(lambda: lots().replay(limit, queue))
        return json_of(ReplayOutcome.model_validate(result.to_json()))

    return router


async def _parking(action: Callable[[], Any]) -> Any:
    try:
        return await action()
    except UnknownLot as problem:
        raise ApiError(400, str(problem)) from None
    except DlqBusy as problem:
        raise ApiError(409, str(problem), {"Retry-After": "1"}) from None
    except DlqError as problem:
        raise ApiError(409, str(problem)) from None
    except BROKER_ERRORS as problem:
        raise ApiError(503, f"RabbitMQ unavailable: {type(problem).__name__}") from None


def admin_api(
    *,
    repository: Callable[[], PaymentReader],
    dlq: DlqOperations | None,
    refunds: Refunds | None,
    version: str,
) -> FastAPI:
    api = FastAPI(
        title="Foodies payment service — admin API",
        version=version,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        max_body_size=MAX_BODY_BYTES,  # also for chunked bodies, which declare no length
        # Spans and logs of its own would carry full URLs (query strings, maybe a token).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        dependencies=[Security(HTTPBearer(auto_error=False, scheme_name="bearerAuth"))],
    )
    api.include_router(payments_router(repository, refunds))
    api.include_router(parking_router(dlq))

    async def on_api_error(_: Request, problem: Exception) -> Response:
        assert isinstance(problem, ApiError)
        return error(problem.status, problem.message, problem.headers)

    async def on_invalid(_: Request, problem: Exception) -> Response:
        assert isinstance(problem, RequestValidationError)
        return error(400, validation_message(problem))

    async def on_http(_: Request, problem: Exception) -> Response:
        assert isinstance(problem, HTTPException)
        message = {404: "not found", 405: "method not allowed", 413: "request body too large"}.get(
            problem.status_code, str(problem.detail)
        )
        return error(problem.status_code, message, dict(problem.headers or {}))

    api.add_exception_handler(ApiError, on_api_error)
    api.add_exception_handler(RequestValidationError, on_invalid)
    api.add_exception_handler(HTTPException, on_http)
    # Starlette answers with this and re-raises; the edge then logs the failure (without its message).
    api.add_exception_handler(Exception, lambda _, problem: failure_response(problem))
    describe_api(api)
    return api
