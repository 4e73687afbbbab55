"""The gateway port: what the service needs from any payment provider."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from app.domain import ChargeResult, PaymentMethod


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str
    order_id: int
    amount: Decimal
    currency: str
    payment_method: PaymentMethod


class GatewayTransientError(Exception):
    """The gateway could not answer this time (unavailable, 5xx); the charge may be retried."""


class PaymentGateway(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once. A decline is a ChargeResult; a transient failure raises
        GatewayTransientError; a call that never answers is cut by the caller's timeout.

        Charging the same idempotency key again returns the first outcome."""
        ...
