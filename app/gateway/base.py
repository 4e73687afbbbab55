"""The gateway port: what the service needs from any payment provider (charges, refunds, errors)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from app.domain import ChargeResult, Payment, PaymentMethod


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One charge of an order; every attempt for the order carries the same `idempotency_key`
    (`order-<orderId>`)."""

    idempotency_key: str
    order_id: int
    amount: Decimal
    currency: str
    payment_method: PaymentMethod
    buyer_id: str = ""  # sent to the gateway as metadata only

    @classmethod
    def of(cls, payment: Payment) -> ChargeRequest:
        """The charge of a stored payment; ValueError if it lacks what a charge needs (such a
        payment was recorded FAILED without a charge and is never charged)."""
        if payment.amount is None or payment.currency is None or payment.payment_method is None:
            raise ValueError(f"payment {payment.id} has no amount, currency or payment method to charge")
        return cls(
            idempotency_key=payment.idempotency_key,
            order_id=payment.order_id,
            amount=payment.amount,
            currency=payment.currency,
            payment_method=payment.payment_method,
            buyer_id=payment.buyer_id,
        )


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """The one refund an order can ever have: `idempotency_key` is `refund-order-<orderId>`, and
    `transaction_id` is the charge being refunded (in full)."""

    idempotency_key: str
    order_id: int
    transaction_id: str
    amount: Decimal | None
    currency: str | None
    reason: str | None = None

    @classmethod
    def of(cls, payment: Payment) -> RefundRequest:
        """The refund of a stored payment's charge, with its reason."""
        return cls(
            idempotency_key=payment.refund_key,
            order_id=payment.order_id,
            transaction_id=payment.transaction_id or "",
            amount=payment.amount,
            currency=payment.currency,
            reason=payment.refund_reason,
        )


@dataclass(frozen=True, slots=True)
class RefundResult:
    """The gateway's answer to a refund: refunded (with its id) or declined (with why)."""

    success: bool
    refund_id: str | None = None
    failure_reason: str | None = None

    @classmethod
    def refunded(cls, refund_id: str | None) -> RefundResult:
        return cls(True, refund_id=refund_id)

    @classmethod
    def declined(cls, reason: str) -> RefundResult:
        return cls(False, failure_reason=reason)


class GatewayTransientError(Exception):
    """The gateway could not answer this time (5xx, 429, a key in use, a broken connection); the
    same request may be retried with the same idempotency key. Counts against the breaker."""


class GatewayUnusableError(Exception):
    """The gateway refuses this service (401/403: wrong or revoked API key). No order can be
    charged until that is fixed; orders wait, none fails for it. Opens the breaker."""


class GatewayOutage(Exception):
    """Raised by the retry/breaker layer, never by a gateway: the order (or refund) must wait for
    the gateway — the breaker is open, or the retries ran out while it was not closed, or the
    gateway is unusable. Nothing was decided about the payment."""


class PaymentGateway(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once. A decline is a ChargeResult; a transient failure raises
        GatewayTransientError (TimeoutError for an attempt that timed out), an unusable gateway
        GatewayUnusableError; a call that never answers is cut by the caller's timeout.

        Charging the same idempotency key again returns the first outcome."""
        ...

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a charge in full, once per idempotency key; errors as for `charge`. A refund
        the gateway declines is a RefundResult with success False."""
        ...
