"""Wire shapes of the events we consume and publish, and the outcome event of a final payment.

Published events serialise to exactly their documented keys: camelCase, money as a decimal
string with two places, instants as ISO-8601 UTC ending in `Z`, nulls written. The consumed
models are the documented schemas (AsyncAPI); the bodies themselves are read by the tolerant
reader in app/messaging/decoding.py, whose rules the field descriptions repeat.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from app.domain import CardBrand, FailureCode, Payment, PaymentMethodType, PaymentStatus
from app.domain.money import CENT
from app.messaging.decoding import MAX_ORDER_ID
from app.messaging.topology import FAILED_KEY, REFUNDED_KEY, SUCCEEDED_KEY

DEFAULT_REFUND_REASON = "Refunded"  # an operator's refund without a reason


def _format_instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_money(value: Decimal) -> str:
    return str(value.quantize(CENT))


# Money we write: always a decimal string with two places.
MoneyOut = Annotated[
    Decimal,
    PlainSerializer(_format_money, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "examples": ["49.99"]}),
]
# Instants we write: ISO-8601 UTC with milliseconds and `Z`.
Instant = Annotated[
    datetime,
    PlainSerializer(_format_instant, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2024-01-15T10:30:01.120Z"]}),
]
OrderId = Annotated[int, Field(strict=True, gt=0, le=MAX_ORDER_ID)]
# What the reader accepts, for the consumed schemas (the reader itself is decoding.py).
_ORDER_ID_IN = WithJsonSchema(
    {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_ORDER_ID},
            {"type": "string", "pattern": "^[0-9]+$"},
        ],
        "description": "A positive 64-bit integer, as a JSON number or a string of digits. Required: a message "
        "without a readable orderId (missing, invalid or given twice) is parked.",
        "examples": [12345],
    }
)
_INSTANT_IN = WithJsonSchema(
    {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "ISO-8601 with Z or an offset, fractional seconds up to nanoseconds. Optional: a missing "
        "or unreadable instant is read as unknown, the message is still processed.",
        "examples": ["2024-01-15T10:30:00Z"],
    }
)


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True, frozen=True)


class PaymentMethodPayload(_CamelModel):
    """The payment method as the order service sends it."""

    model_config = ConfigDict(extra="ignore")

    type: PaymentMethodType = Field(description="Required; another value rejects the order with INVALID_CARD.")
    card_last_four: str | None = Field(
        None,
        description="Any string of at most 4 characters (the last four typed), or null; longer rejects with "
        "INVALID_CARD. Never a full card number.",
        json_schema_extra={"maxLength": 4},
    )
    card_brand: CardBrand | None = Field(
        None, description="Null or missing allowed; an unknown brand is read as UNKNOWN."
    )
    card_holder_name: str | None = Field(None, description="Null or missing allowed; kept up to 255 characters.")
    expiration_month: int | None = Field(
        None,
        description="1-12, null or missing; another value rejects with INVALID_CARD.",
        json_schema_extra={"minimum": 1, "maximum": 12},
    )
    expiration_year: int | None = Field(None, description="Any (32-bit) integer, null or missing.")


class OrderStockConfirmedEvent(_CamelModel):
    """Consumed from routing key `order.stock-confirmed`: stock is reserved, charge the buyer.

    Every order whose orderId can be read gets an outcome: a value that makes the charge
    impossible fails the payment (`payment.failed`, INVALID_CARD or UNKNOWN) instead of parking
    the message. Unknown keys are ignored; a key given twice rejects the order."""

    model_config = ConfigDict(extra="ignore")

    event_id: str | None = Field(None, description="The sender's event id; generated when missing.")
    order_id: Annotated[int | str, _ORDER_ID_IN]
    buyer_id: str = Field(description="Required, non-empty; otherwise the order fails with UNKNOWN.")
    total_amount: Annotated[
        Decimal | str,
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}, {"type": "number"}],
                "description": "A plain decimal string (no exponent, sign, spaces or underscores) or a JSON number; "
                "> 0, below 10000000000, at most 2 significant decimal places, representable in the "
                "currency's minor units. Otherwise the order fails with UNKNOWN.",
                "examples": ["49.99"],
            }
        ),
    ]
    currency: str = Field(
        description="An ISO 4217 code with a minor unit, in any case (normalised to upper case); otherwise the "
        "order fails with UNKNOWN.",
        json_schema_extra={"pattern": "^[A-Za-z]{3}$", "examples": ["USD"]},
    )
    payment_method: PaymentMethodPayload = Field(
        description="Required; missing or not an object fails with INVALID_CARD."
    )
    occurred_at: Annotated[datetime | None, _INSTANT_IN] = None


class OrderCancelledEvent(_CamelModel):
    """Consumed from routing key `order.cancelled`: never charge the order; refund a charge already made."""

    model_config = ConfigDict(extra="ignore")

    order_id: Annotated[int | str, _ORDER_ID_IN]
    buyer_id: str | None = Field(None, description="Informational; may be missing.")
    reason: str | None = Field(
        None,
        description="Kept (up to 500 characters) as the refund reason; missing or empty reads as `Order cancelled`.",
    )
    cancelled_at: Annotated[datetime | None, _INSTANT_IN] = None


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


class PaymentRefundedEvent(_CamelModel):
    """Published with routing key `payment.refunded`: a charge was given back (the order was
    cancelled, or an operator refunded it)."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID
    order_id: OrderId
    payment_id: int
    transaction_id: str
    refund_id: str
    amount: MoneyOut
    currency: str
    reason: str
    refunded_at: Instant


def _charged(payment: Payment) -> tuple[Decimal, str]:
    """Amount and currency of a payment that was charged (both are known once a charge was made)."""
    if payment.amount is None or payment.currency is None:
        raise ValueError(f"payment {payment.id} was charged but has no amount or currency")
    return payment.amount, payment.currency


def outcome_event(payment: Payment) -> tuple[str, bytes, uuid.UUID]:
    """The routing key, JSON body and eventId announcing a final payment; the same on every
    re-publication. ValueError for a payment with nothing to announce (unfinished, CANCELLED,
    or charged for an order since cancelled: `payment.succeeded` is never sent for those)."""
    announces = payment.announces
    event_id = payment.outcome_event_id
    event: BaseModel
    if announces is PaymentStatus.SUCCEEDED:
        amount, currency = _charged(payment)
        event = OrderPaymentSucceededEvent(
            event_id=event_id,
            order_id=payment.order_id,
            payment_id=payment.id,
            transaction_id=payment.transaction_id or "",
            amount=amount,
            currency=currency,
            processed_at=payment.processed_at or payment.updated_at or payment.created_at,
        )
        key = SUCCEEDED_KEY
    elif announces is PaymentStatus.FAILED:
        event = OrderPaymentFailedEvent(
            event_id=event_id,
            order_id=payment.order_id,
            failure_reason=payment.failure_reason or "Payment failed",
            failure_code=payment.failure_code or FailureCode.UNKNOWN,
            occurred_at=payment.processed_at or payment.updated_at or payment.created_at,
        )
        key = FAILED_KEY
    elif announces is PaymentStatus.REFUNDED:
        amount, currency = _charged(payment)
        event = PaymentRefundedEvent(
            event_id=event_id,
            order_id=payment.order_id,
            payment_id=payment.id,
            transaction_id=payment.transaction_id or "",
            refund_id=payment.refund_id or "",
            amount=amount,
            currency=currency,
            reason=payment.refund_reason or DEFAULT_REFUND_REASON,
            refunded_at=payment.refunded_at or payment.updated_at or payment.created_at,
        )
        key = REFUNDED_KEY
    else:
        raise ValueError(f"payment {payment.id} has no outcome to announce ({payment.status})")
    return key, event.__pydantic_serializer__.to_json(event, by_alias=True), event_id
