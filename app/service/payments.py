"""Charging: process one stock-confirmed order idempotently by order id.

A new order is claimed (a PROCESSING row with a lease), charged once through the gateway
(retries inside use the same idempotency key) and recorded SUCCEEDED or FAILED. An order
that already has a final payment is not charged again: its stored outcome is returned for
re-publication. An order whose lease expired (its worker died) is taken over and charged
again with the same idempotency key, which the gateway answers with the original outcome.
An order the decoder could identify but not charge (a rejection) is recorded FAILED
without a charge. A charge that must wait for the gateway (circuit open) gives its lease
back and raises `PaymentDeferred`. A charge that succeeds for an order cancelled meanwhile
is refunded at once (see refunds.py), so `payment.succeeded` is never announced for it.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from app.domain import ChargeResult, Disposition, FailureCode, Payment, PaymentRequest, ProcessingResult
from app.faults import NO_FAULTS, FaultInjector
from app.gateway.base import ChargeRequest, GatewayOutage
from app.service.ports import Charger, PaymentStore
from app.service.refunds import RefundService


class PaymentDeferred(Exception):
    """The gateway is unavailable: the order waits (nothing failed, no lease held)."""


def conflicts_with(payment: Payment, request: PaymentRequest) -> list[str]:
    """The fields in which a second event for an order disagrees with its stored payment."""
    if request.rejection is not None or payment.amount is None:
        return []
    pairs = (("amount", payment.amount, request.amount), ("currency", payment.currency, request.currency))
    found = [name for name, stored, given in pairs if stored != given]
    if payment.buyer_id != request.buyer_id:
        found.append("buyerId")
    return found


class PaymentService:
    def __init__(
        self,
        store: PaymentStore,
        charger: Charger,
        refunds: RefundService,
        *,
        lease_s: float = 30.0,
        faults: FaultInjector = NO_FAULTS,
        on_conflict: Callable[[int, list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.charger = charger
        self.refunds = refunds
        self.lease_s = lease_s
        self.faults = faults
        self.on_conflict = on_conflict

    async def process(self, request: PaymentRequest) -> ProcessingResult:
        payment, owned = await self.store.claim(request, self.lease_s)
        if not owned:
            self._check_conflict(payment, request)
            if payment.is_final:
                return ProcessingResult(Disposition.ALREADY_PROCESSED, payment)
            taken = await self.store.take_over(payment.id, self.lease_s)
            if taken is None:  # a live worker holds it, or it just finished
                current = await self.store.get_by_order_id(request.order_id) or payment
                if current.is_final:
                    return ProcessingResult(Disposition.ALREADY_PROCESSED, current)
                return ProcessingResult(Disposition.IN_PROGRESS, current)
            payment = taken
        self.faults.hit("after_claim")
        if request.rejection is not None:  # identified but not chargeable: fail without a charge
            failure = ChargeResult.failed(request.rejection.code, request.rejection.reason, attempts=0)
            return ProcessingResult(Disposition.PROCESSED, await self.store.record_outcome(payment, failure))
        return ProcessingResult(Disposition.PROCESSED, await self.complete(payment))

    async def complete(self, payment: Payment) -> Payment:
        """Charge a claimed payment and record its outcome (also used by the reconciler)."""
        try:
            request = ChargeRequest.of(payment)
        except ValueError:  # a rejected order whose worker died before recording it: fail it, never charge
            failure = ChargeResult.failed(FailureCode.UNKNOWN, "Order cannot be charged", attempts=0)
            return await self.store.record_outcome(payment, failure)
        try:
            charge = await self.charger.charge(request)
        except GatewayOutage:
            await self.store.release(payment.id)
            raise PaymentDeferred(f"order {payment.order_id} waits for the gateway") from None
        self.faults.hit("during_charge")
        final = await self.store.record_outcome(payment, charge)
        self.faults.hit("after_commit")
        if final.refund_owed:  # cancelled while the charge was in flight: give the money back now
            final = await self.refunds.complete(final)
        return final

    async def fail_without_charge(self, payment: Payment, failure: ChargeResult) -> Payment:
        """Record a failure for a claimed payment without calling the gateway (max wait passed)."""
        return await self.store.record_outcome(payment, failure)

    def _check_conflict(self, payment: Payment, request: PaymentRequest) -> None:
        fields = conflicts_with(payment, request)
        if fields:
            logger.warning(
                "conflicting event for an order that already has a payment: not charged",
                order_id=request.order_id,
                payment_id=payment.id,
                fields=fields,
            )
            if self.on_conflict is not None:
                self.on_conflict(request.order_id, fields)
