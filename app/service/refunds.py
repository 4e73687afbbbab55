"""Cancellations and refunds: never keep money for a cancelled order.

On `order.cancelled`: no payment yet → a CANCELLED row (a later stock-confirmed event is not
charged); a charge in flight → the cancellation is remembered and a success is refunded at
once instead of announced; SUCCEEDED → refunded; FAILED / REFUNDED / CANCELLED → nothing.
Every refund of an order uses the key `refund-order-<orderId>`, so redeliveries, replicas and
crash recovery can repeat the call without a second refund. A refund the gateway declines
leaves the payment SUCCEEDED for an operator (`POST /payments/{orderId}/refund`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from loguru import logger

from app.domain import OrderCancellation, Payment, PaymentStatus
from app.faults import NO_FAULTS, FaultInjector
from app.gateway.base import GatewayOutage, RefundRequest
from app.service.ports import Charger, PaymentStore

Announce = Callable[[Payment], Awaitable[bool]]
RefundObserver = Callable[[str], None]  # "refunded" / "declined" / "error"


class RefundOutcome(StrEnum):
    REFUNDED = "REFUNDED"
    NOT_FOUND = "NOT_FOUND"
    NOT_REFUNDABLE = "NOT_REFUNDABLE"
    DECLINED = "DECLINED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RefundResult:
    outcome: RefundOutcome
    payment: Payment | None
    message: str


@dataclass(frozen=True, slots=True)
class CancelResult:
    case: str  # before_charge / in_flight / after_success / final
    payment: Payment


class RefundService:
    def __init__(
        self,
        store: PaymentStore,
        charger: Charger,
        *,
        lease_s: float = 30.0,
        faults: FaultInjector = NO_FAULTS,
        observe: RefundObserver | None = None,
    ) -> None:
        self.store = store
        self.charger = charger
        self.lease_s = lease_s
        self.faults = faults
        self.observe = observe or (lambda outcome: None)

    async def cancel(self, cancellation: OrderCancellation) -> CancelResult:
        payment, case = await self.store.cancel(cancellation, self.lease_s)
        if case == "after_success":
            payment = await self.complete(payment)
        return CancelResult(case, payment)

    async def complete(self, payment: Payment) -> Payment:
        """Refund a payment whose refund is owed and leased by the caller; returns it REFUNDED,
        or still SUCCEEDED (declined: no longer owed; gateway unavailable: still owed, the
        reconciler tries again)."""
        request = RefundRequest.of(payment)
        self.faults.hit("before_refund")
        try:
            refund = await self.charger.refund(request)
        except GatewayOutage:
            await self.store.release(payment.id)
            self.observe("error")
            logger.warning("refund waits for the gateway; it stays owed", order_id=payment.order_id)
            return payment
        self.faults.hit("after_refund")
        final = await self.store.record_refund(payment, refund)
        if final.status is PaymentStatus.REFUNDED:
            self.observe("refunded")
            logger.info("payment refunded", order_id=final.order_id, payment_id=final.id, refund_id=final.refund_id)
        else:
            self.observe("declined")
            logger.error(
                "refund declined by the gateway: the payment stays SUCCEEDED until an operator retries it",
                order_id=final.order_id,
                payment_id=final.id,
                reason=refund.failure_reason,
            )
        return final

    async def refund(self, order_id: int, reason: str | None, announce: Announce) -> RefundResult:
        """An operator's refund (HTTP or command line); announces `payment.refunded` on success."""
        current = await self.store.get_by_order_id(order_id)
        if current is None:
            return RefundResult(RefundOutcome.NOT_FOUND, None, f"no payment for order {order_id}")
        if current.status is PaymentStatus.REFUNDED:
            return RefundResult(RefundOutcome.REFUNDED, current, "already refunded")
        if current.status is not PaymentStatus.SUCCEEDED:
            why = {
                PaymentStatus.FAILED: "the charge failed: nothing to refund",
                PaymentStatus.CANCELLED: "the order was cancelled before it was charged: nothing to refund",
            }.get(current.status, "the charge is still in progress")
            return RefundResult(RefundOutcome.NOT_REFUNDABLE, current, why)
        claimed = await self.store.claim_refund(order_id, reason, self.lease_s)
        if claimed is None:
            return RefundResult(RefundOutcome.NOT_REFUNDABLE, current, "a refund of this payment is in progress")
        final = await self.complete(claimed)
        if final.status is PaymentStatus.REFUNDED:
            await announce(final)
            return RefundResult(RefundOutcome.REFUNDED, final, "refunded")
        if final.refund_owed:
            return RefundResult(RefundOutcome.UNAVAILABLE, final, "the payment gateway is unavailable; try again later")
        return RefundResult(RefundOutcome.DECLINED, final, "the payment gateway declined the refund")
