"""Shapes of the admin API's bodies (requests, records, listings, errors), as OpenAPI shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    create_model,
)
from pydantic.alias_generators import to_camel

from app.domain import CardBrand, Payment, PaymentMethodType, PaymentStatus

MAX_ID = 2**63 - 1
# No control characters: PostgreSQL text cannot hold NUL, and none belongs in an id or a reason.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


Instant = Annotated[
    datetime,
    PlainSerializer(_instant, return_type=str),
    Field(json_schema_extra={"format": "date-time", "examples": ["2024-01-15T10:30:00.000Z"]}),
]
MoneyText = Annotated[
    Decimal,
    PlainSerializer(_money, return_type=str),
    Field(json_schema_extra={"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "examples": ["49.99"]}),
]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True)


class ErrorBody(BaseModel):
    """Every error answer: a short message and the HTTP status again."""

    error: str = Field(examples=["no payment for order 42"])
    status: int = Field(examples=[404])


class PaymentMethodOut(_Camel):
    type: PaymentMethodType
    card_last_four: str | None = None
    card_brand: CardBrand | None = None
    card_holder_name: str | None = None
    expiration_month: int | None = None
    expiration_year: int | None = None


class PaymentRecord(_Camel):
    """One payment as the admin API returns it. `refundId`/`refundedAt` are null unless REFUNDED;
    amount, currency and paymentMethod are null only on a FAILED payment whose event had no usable value."""

    id: int
    order_id: int
    buyer_id: str
    amount: MoneyText | None
    currency: str | None
    status: PaymentStatus
    payment_method: PaymentMethodOut | None
    transaction_id: str | None
    failure_reason: str | None
    created_at: Instant
    processed_at: Instant | None
    refund_id: str | None
    refunded_at: Instant | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentRecord:
        method = payment.payment_method
        return cls(
            id=payment.id,
            order_id=payment.order_id,
            buyer_id=payment.buyer_id,
            amount=payment.amount,
            currency=payment.currency,
            status=payment.status,
            payment_method=None
            if method is None
            else PaymentMethodOut(
                type=method.type,
                card_last_four=method.card_last_four,
                card_brand=method.card_brand,
                card_holder_name=method.card_holder_name,
                expiration_month=method.expiration_month,
                expiration_year=method.expiration_year,
            ),
            transaction_id=payment.transaction_id,
            failure_reason=payment.failure_reason,
            created_at=payment.created_at,
            processed_at=payment.processed_at,
            refund_id=payment.refund_id,
            refunded_at=payment.refunded_at,
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class PaymentPage(BaseModel):
    """A page of payments, newest first."""

    items: list[PaymentRecord]
    limit: int
    offset: int


class RefundRequest(BaseModel):
    """Optional body of a refund: why (kept on the payment and sent to the gateway)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=PRINTABLE)] | None = None


def _json_integer(value: Any) -> Any:
    """A JSON number with no fraction (5 or 5.0); not a string or a boolean, which lax int parsing would take."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be a JSON integer")
    return value


def replay_request(lot: Any) -> type[BaseModel]:
    """The optional body of a replay, `lot` being the type of a lot's name (the names are settings)."""
    return create_model(
        "ReplayRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Optional body of a replay: the query parameters' names; give each in one place only.",
        limit=(Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_json_integer)] | None, None),
        queue=(lot | None, None),
    )


class ParkedMessageOut(_Camel):
    """One parked message: why it was parked and the start of its body."""

    reason: str | None
    category: str | None
    parked_at: str | None
    body_size: int
    body_preview: str = Field(description="The first bytes of the body (UTF-8, undecodable bytes replaced).")
    message_id: str | None
    content_type: str | None
    previous_reason: str | None
    replay_count: int


class ParkingLotListing(BaseModel):
    queue: str = Field(description="The parking lot listed.")
    count: int = Field(description="Messages waiting in the parking lot.")
    messages: list[ParkedMessageOut]
    limit: int


class ReplayOutcome(BaseModel):
    queue: str = Field(description="The parking lot replayed from.")
    target: str = Field(description="The consumed queue the copies went to.")
    replayed: int
    remaining: int = Field(description="Left in the parking lot afterwards (including any that parked again).")
