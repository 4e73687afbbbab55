"""The ports the service layer needs: the payment store, the gateway (behind retries), the
gateway gate (circuit breaker). Adapters implement them; tests use in-memory fakes."""

from __future__ import annotations

from typing import Protocol

from app.domain import ChargeResult, OrderCancellation, Payment, PaymentRequest
from app.gateway.base import ChargeRequest, RefundRequest, RefundResult


class PaymentStore(Protocol):
    async def claim(self, request: PaymentRequest, lease_s: float) -> tuple[Payment, bool]:
        """The order's payment, created PROCESSING under a lease if new; True if this call owns it."""
        ...

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None:
        """Claim an unfinished payment whose lease expired; None if someone else holds it."""
        ...

    async def release(self, payment_id: int) -> None:
        """Give up the lease of an unfinished payment (its charge must wait for the gateway)."""
        ...

    async def record_outcome(self, payment: Payment, charge: ChargeResult) -> Payment:
        """Store the charge's outcome (the stored payment wins if it was final already). A
        success for an order cancelled meanwhile comes back with a refund owed."""
        ...

    async def get_by_order_id(self, order_id: int) -> Payment | None: ...

    async def cancel(self, cancellation: OrderCancellation, lease_s: float) -> tuple[Payment, str]:
        """Remember a cancellation; returns the payment and the case: `before_charge` (a
        CANCELLED row was created), `in_flight`, `after_success` (a refund is owed and this
        call holds its lease) or `final` (nothing changes)."""
        ...

    async def claim_refund(self, order_id: int, reason: str | None, lease_s: float) -> Payment | None:
        """Owe and lease a refund of a SUCCEEDED payment (operator request); None if not refundable now."""
        ...

    async def take_over_refund(self, payment_id: int, lease_s: float) -> Payment | None: ...

    async def record_refund(self, payment: Payment, refund: RefundResult) -> Payment:
        """REFUNDED on success; on a decline the refund is no longer owed and the payment stays SUCCEEDED."""
        ...


class Charger(Protocol):
    """The gateway behind retries and the circuit breaker. A decline is a result; when the
    order must wait for the gateway it raises `GatewayOutage`."""

    async def charge(self, request: ChargeRequest) -> ChargeResult: ...

    async def refund(self, request: RefundRequest) -> RefundResult: ...


class GatewayGate(Protocol):
    """Whether a charge may be attempted now (the circuit breaker's view)."""

    @property
    def available(self) -> bool: ...

    async def wait_until_callable(self, timeout: float) -> bool: ...
