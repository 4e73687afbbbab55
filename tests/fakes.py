"""In-memory stand-ins for unit tests of the service layer (the real store is tested
against PostgreSQL in test_persistence.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from app.domain import ChargeResult, Payment, PaymentRequest, PaymentStatus
from app.gateway.base import ChargeRequest


class InMemoryPaymentStore:
    def __init__(self) -> None:
        self.payments: dict[int, Payment] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()

    async def claim(self, request: PaymentRequest, lease_s: float) -> tuple[Payment, bool]:
        async with self._lock:
            existing = self.payments.get(request.order_id)
            if existing is not None:
                return existing, False
            now = datetime.now(UTC)
            payment = Payment(
                id=self._next_id,
                order_id=request.order_id,
                buyer_id=request.buyer_id,
                amount=request.amount,
                currency=request.currency,
                status=PaymentStatus.PROCESSING,
                payment_method=request.payment_method,
                created_at=now,
                event_id=request.event_id,
                lease_until=now + timedelta(seconds=lease_s),
            )
            self._next_id += 1
            self.payments[request.order_id] = payment
            return payment, True

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None:
        async with self._lock:
            for order_id, payment in self.payments.items():
                now = datetime.now(UTC)
                if payment.id == payment_id and not payment.is_final and (payment.lease_until or now) <= now:
                    taken = replace(payment, lease_until=now + timedelta(seconds=lease_s))
                    self.payments[order_id] = taken
                    return taken
            return None

    async def record_outcome(self, payment: Payment, charge: ChargeResult) -> Payment:
        async with self._lock:
            current = self.payments[payment.order_id]
            if current.is_final:
                return current
            final = current.with_outcome(charge, datetime.now(UTC))
            self.payments[payment.order_id] = final
            return final

    async def get_by_order_id(self, order_id: int) -> Payment | None:
        return self.payments.get(order_id)

    def expire_lease(self, order_id: int) -> None:
        payment = self.payments[order_id]
        self.payments[order_id] = replace(payment, lease_until=datetime.now(UTC) - timedelta(seconds=1))


class CountingGateway:
    """Wraps a gateway and counts the charge calls it receives."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.calls: list[ChargeRequest] = []

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls.append(request)
        return await self.inner.charge(request)


class ExplodingGateway:
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        raise RuntimeError("gateway client crashed")
