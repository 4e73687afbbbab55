"""The payment domain: records, statuses, charge results. Plain Python, no frameworks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"  # the order was cancelled before it was charged; never charged

    @property
    def is_final(self) -> bool:
        return self not in (PaymentStatus.PENDING, PaymentStatus.PROCESSING)


class PaymentMethodType(StrEnum):
    CREDIT_CARD = "CREDIT_CARD"
    DEBIT_CARD = "DEBIT_CARD"
    DIGITAL_WALLET = "DIGITAL_WALLET"
    BANK_TRANSFER = "BANK_TRANSFER"


class CardBrand(StrEnum):
    VISA = "VISA"
    MASTERCARD = "MASTERCARD"
    AMEX = "AMEX"
    DISCOVER = "DISCOVER"
    UNKNOWN = "UNKNOWN"


class FailureCode(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    CARD_DECLINED = "CARD_DECLINED"
    CARD_EXPIRED = "CARD_EXPIRED"
    INVALID_CARD = "INVALID_CARD"
    FRAUD_SUSPECTED = "FRAUD_SUSPECTED"
    GATEWAY_ERROR = "GATEWAY_ERROR"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"


FAILURE_REASONS: dict[FailureCode, str] = {
    FailureCode.INSUFFICIENT_FUNDS: "Insufficient funds",
    FailureCode.CARD_DECLINED: "Card declined",
    FailureCode.CARD_EXPIRED: "Card expired",
    FailureCode.INVALID_CARD: "Invalid card",
    FailureCode.FRAUD_SUSPECTED: "Fraud suspected",
    FailureCode.GATEWAY_ERROR: "Payment gateway unavailable",
    FailureCode.TIMEOUT: "Payment gateway timeout",
    FailureCode.UNKNOWN: "Payment failed",
}


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    type: PaymentMethodType
    card_last_four: str | None = None
    card_brand: CardBrand | None = None
    card_holder_name: str | None = None
    expiration_month: int | None = None
    expiration_year: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order that can be identified cannot be charged: it fails without a charge."""

    code: FailureCode  # INVALID_CARD (payment method problems) or UNKNOWN
    reason: str  # names the field, e.g. "Invalid totalAmount"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """What the service needs to charge one order (decoded from the consumed event).

    A request with a `rejection` is recorded FAILED without a charge; its unreadable fields
    are None (buyer_id is "" when missing)."""

    event_id: str
    order_id: int
    buyer_id: str
    amount: Decimal | None
    currency: str | None
    payment_method: PaymentMethod | None
    occurred_at: datetime | None = None
    rejection: Rejection | None = None


@dataclass(frozen=True, slots=True)
class OrderCancellation:
    """The order service cancelled an order (buyer, stock rejected or payment failed)."""

    order_id: int
    buyer_id: str | None
    reason: str
    cancelled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """The gateway's answer to one charge (after retries)."""

    success: bool
    transaction_id: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    attempts: int = 1

    @classmethod
    def succeeded(cls, transaction_id: str, attempts: int = 1) -> ChargeResult:
        return cls(True, transaction_id=transaction_id, attempts=attempts)

    @classmethod
    def failed(cls, code: FailureCode, reason: str | None = None, attempts: int = 1) -> ChargeResult:
        return cls(False, failure_code=code, failure_reason=reason or FAILURE_REASONS[code], attempts=attempts)


# Outgoing event ids are derived from the payment, so every (re)publication of one outcome
# carries the same eventId and downstream consumers can de-duplicate.
_OUTCOME_NAMESPACE = uuid.UUID("0b6f9a52-6f0c-4a37-9a52-2f1d8c3e7a10")


@dataclass(slots=True)
class Payment:
    id: int
    order_id: int
    buyer_id: str
    amount: Decimal | None  # None only on a FAILED row whose event had no usable amount
    currency: str | None
    status: PaymentStatus
    payment_method: PaymentMethod | None
    created_at: datetime
    transaction_id: str | None = None
    failure_reason: str | None = None
    failure_code: FailureCode | None = None
    processed_at: datetime | None = None
    event_id: str | None = None
    lease_until: datetime | None = None
    published_at: datetime | None = None
    updated_at: datetime | None = field(default=None)
    # Cancellation and refund (see service/refunds): cancelled_at is when order.cancelled
    # arrived; a refund is owed while refund_requested_at is set and refunded_at is not.
    cancelled_at: datetime | None = None
    refund_reason: str | None = None
    refund_requested_at: datetime | None = None
    refund_id: str | None = None
    refunded_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def outcome_event_id(self) -> uuid.UUID:
        return uuid.uuid5(_OUTCOME_NAMESPACE, f"payment:{self.id}:order:{self.order_id}:{self.status}")

    @property
    def idempotency_key(self) -> str:
        """The key every charge attempt for this order uses, whoever makes it."""
        return f"order-{self.order_id}"

    @property
    def refund_key(self) -> str:
        """The key of the one refund this order can ever have."""
        return f"refund-order-{self.order_id}"

    @property
    def refund_owed(self) -> bool:
        return self.status is PaymentStatus.SUCCEEDED and self.refund_requested_at is not None

    @property
    def announces(self) -> PaymentStatus | None:
        """The outcome event this payment stands for, if any: none while unfinished, none for a
        CANCELLED order (never charged), and never `payment.succeeded` once the order was
        cancelled — its charge is refunded (or awaits an operator) instead."""
        if self.status is PaymentStatus.SUCCEEDED and self.cancelled_at is not None:
            return None
        if self.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REFUNDED):
            return self.status
        return None

    def with_outcome(self, charge: ChargeResult, at: datetime) -> Payment:
        if charge.success:
            return replace(
                self,
                status=PaymentStatus.SUCCEEDED,
                transaction_id=charge.transaction_id,
                failure_reason=None,
                failure_code=None,
                processed_at=at,
                lease_until=None,
                updated_at=at,
            )
        return replace(
            self,
            status=PaymentStatus.FAILED,
            transaction_id=None,
            failure_reason=charge.failure_reason,
            failure_code=charge.failure_code,
            processed_at=at,
            lease_until=None,
            updated_at=at,
        )


class Disposition(StrEnum):
    """What processing one request did."""

    PROCESSED = "processed"  # charged now; the outcome is new
    ALREADY_PROCESSED = "already_processed"  # a final outcome existed; nothing charged
    IN_PROGRESS = "in_progress"  # another worker holds a live lease on this order


@dataclass(frozen=True, slots=True)
class ProcessingResult:
    disposition: Disposition
    payment: Payment

    @property
    def should_publish(self) -> bool:
        return self.disposition is not Disposition.IN_PROGRESS
