"""Wire shapes of the events we consume and publish (see CONTRACT.md §2).

Consumed events are validated strictly on values and tolerantly on unknown keys; published
events serialise to exactly the contract's keys: camelCase, money as a decimal string,
instants as ISO-8601 UTC ending in `Z`, nulls written.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from app.domain import (
    CardBrand,
    FailureCode,
    Payment,
    PaymentMethod,
    PaymentMethodType,
    PaymentRequest,
    PaymentStatus,
)

MAX_AMOUNT = Decimal("10000000000")  # NUMERIC(12,2) holds values below 10^10
_CENT = Decimal("0.01")
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _to_money(value: Any) -> Decimal:
    """Accept a JSON string or number holding a plain decimal with at most 2 places."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError("must be a decimal string or number")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError("is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount <= 0:
        raise ValueError("must be greater than 0")
    if amount.as_tuple().exponent < -2 and amount != amount.quantize(_CENT):  # type: ignore[operator]
        raise ValueError("must have at most 2 decimal places")
    if amount >= MAX_AMOUNT:
        raise ValueError("must be below 10000000000")
    return amount.quantize(_CENT)


def _to_instant(value: Any) -> Any:
    """Accept nanosecond fractions (Kotlin's Instant) by trimming them to microseconds."""
    if isinstance(value, str):
        return _FRACTION.sub(r"\1", value.strip())
    return value


def _format_instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_money(value: Decimal) -> str:
    return str(value.quantize(_CENT))


Money = Annotated[
    Decimal,
    BeforeValidator(_to_money),
    PlainSerializer(_format_money, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$"}, {"type": "number"}],
            "description": "Money: a plain decimal string with at most 2 places (a JSON number is accepted).",
            "examples": ["49.99"],
        },
        mode="validation",
    ),
]
# Money we write: always a decimal string with two places.
MoneyOut = Annotated[
    Decimal,
    PlainSerializer(_format_money, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "examples": ["49.99"]}),
]
Instant = Annotated[
    datetime,
    BeforeValidator(_to_instant),
    PlainSerializer(_format_instant, return_type=str, when_used="json"),
]
NonEmpty255 = Annotated[str, StringConstraints(min_length=1, max_length=255)]
OrderId = Annotated[int, Field(strict=True, gt=0, le=2**63 - 1)]


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        frozen=True,
    )


class PaymentMethodPayload(_CamelModel):
    model_config = ConfigDict(extra="ignore")

    type: PaymentMethodType
    card_last_four: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None = None
    card_brand: CardBrand | None = None
    card_holder_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    expiration_month: Annotated[int, Field(strict=True, ge=1, le=12)] | None = None
    expiration_year: Annotated[int, Field(strict=True, ge=1900, le=9999)] | None = None

    def to_domain(self) -> PaymentMethod:
        return PaymentMethod(
            type=self.type,
            card_last_four=self.card_last_four,
            card_brand=self.card_brand,
            card_holder_name=self.card_holder_name,
            expiration_month=self.expiration_month,
            expiration_year=self.expiration_year,
        )

    @classmethod
    def from_domain(cls, method: PaymentMethod) -> PaymentMethodPayload:
        return cls(
            type=method.type,
            card_last_four=method.card_last_four,
            card_brand=method.card_brand,
            card_holder_name=method.card_holder_name,
            expiration_month=method.expiration_month,
            expiration_year=method.expiration_year,
        )


class OrderStockConfirmedEvent(_CamelModel):
    """Consumed from routing key `order.stock-confirmed`: stock is reserved, charge the buyer."""

    model_config = ConfigDict(extra="ignore")

    event_id: NonEmpty255
    order_id: OrderId
    buyer_id: NonEmpty255
    total_amount: Money
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    payment_method: PaymentMethodPayload
    occurred_at: Instant

    def to_request(self) -> PaymentRequest:
        return PaymentRequest(
            event_id=self.event_id,
            order_id=self.order_id,
            buyer_id=self.buyer_id,
            amount=self.total_amount,
            currency=self.currency,
            payment_method=self.payment_method.to_domain(),
            occurred_at=self.occurred_at,
        )


class OrderPaymentSucceededEvent(_CamelModel):
    """Published with routing key `payment.succeeded`: the order can move to Paid."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID
    order_id: OrderId
    payment_id: int
    transaction_id: str
    amount: MoneyOut
    currency: str
    processed_at: Instant


class OrderPaymentFailedEvent(_CamelModel):
    """Published with routing key `payment.failed`: the order is cancelled."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID
    order_id: OrderId
    failure_reason: str
    failure_code: FailureCode
    occurred_at: Instant


SUCCEEDED_ROUTING_KEY = "payment.succeeded"
FAILED_ROUTING_KEY = "payment.failed"
CONSUMED_ROUTING_KEY = "order.stock-confirmed"


def outcome_event(payment: Payment) -> tuple[str, bytes, uuid.UUID]:
    """The routing key, JSON body and eventId announcing a final payment; the same on every
    replay."""
    at = payment.processed_at or payment.updated_at or payment.created_at
    event_id = payment.outcome_event_id
    if payment.status is PaymentStatus.SUCCEEDED:
        event: BaseModel = OrderPaymentSucceededEvent(
            event_id=event_id,
            order_id=payment.order_id,
            payment_id=payment.id,
            transaction_id=payment.transaction_id or "",
            amount=payment.amount,
            currency=payment.currency,
            processed_at=at,
        )
        return SUCCEEDED_ROUTING_KEY, event.__pydantic_serializer__.to_json(event, by_alias=True), event_id
    if payment.status is PaymentStatus.FAILED:
        code = payment.failure_code or FailureCode.UNKNOWN
        event = OrderPaymentFailedEvent(
            event_id=event_id,
            order_id=payment.order_id,
            failure_reason=payment.failure_reason or "Payment failed",
            failure_code=code,
            occurred_at=at,
        )
        return FAILED_ROUTING_KEY, event.__pydantic_serializer__.to_json(event, by_alias=True), event_id
    raise ValueError(f"payment {payment.id} has no final outcome yet ({payment.status})")
