"""The service layer: process one payment request idempotently by order id.

A new order is claimed (a PROCESSING row with a lease), charged once through the gateway
(retries inside use the same idempotency key) and recorded SUCCEEDED or FAILED. An order
that already has a final payment is not charged again: its stored outcome is returned for
re-publication. An order whose lease expired (its worker died) is taken over and charged
again with the same idempotency key, which the gateway answers with the original outcome.
"""

from __future__ import annotations

from typing import Protocol

from app.domain import ChargeResult, Disposition, Payment, PaymentRequest, ProcessingResult
from app.faults import NO_FAULTS, FaultInjector
from app.gateway.base import ChargeRequest


class PaymentStore(Protocol):
    async def claim(self, request: PaymentRequest, lease_s: float) -> tuple[Payment, bool]: ...

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None: ...

    async def record_outcome(self, payment: Payment, charge: ChargeResult) -> Payment: ...

    async def get_by_order_id(self, order_id: int) -> Payment | None: ...


class Charger(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeResult: ...




class PaymentService:
    def __init__(
        self,
        store: PaymentStore,
        charger: Charger,
        *,
        lease_s: float = 30.0,
        faults: FaultInjector = NO_FAULTS,
    ) -> None:
        self.store = store
        self.charger = charger
        self.lease_s = lease_s
        self.faults = faults

    async def process(self, request: PaymentRequest) -> ProcessingResult:
        payment, owned = await self.store.claim(request, self.lease_s)
        if not owned:
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
        return ProcessingResult(Disposition.PROCESSED, await self.complete(payment))

    async def complete(self, payment: Payment) -> Payment:
        """Charge a claimed payment and record its outcome (also used by the reconciler)."""
        charge = await self.charger.charge(
            ChargeRequest(
                idempotency_key=payment.idempotency_key,
                order_id=payment.order_id,
                amount=payment.amount,
                currency=payment.currency,
                payment_method=payment.payment_method,
            )
        )
        self.faults.hit("during_charge")
        final = await self.store.record_outcome(payment, charge)
        self.faults.hit("after_commit")
        return final
