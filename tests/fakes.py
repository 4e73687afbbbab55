"""In-memory stand-ins for unit tests of the service layer and consumers (the real store is
tested against PostgreSQL in tests/integration/test_persistence.py with the same rules)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from app.domain import ChargeResult, OrderCancellation, Payment, PaymentRequest, PaymentStatus
from app.gateway.base import ChargeRequest, RefundRequest, RefundResult


def _now() -> datetime:
    return datetime.now(UTC)


class InMemoryPaymentStore:
    def __init__(self) -> None:
        self.payments: dict[int, Payment] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()

    def _new(self, order_id: int, buyer_id: str, status: PaymentStatus, **fields: object) -> Payment:
        payment = Payment(
            id=self._next_id,
            order_id=order_id,
            buyer_id=buyer_id,
            amount=None,
            currency=None,
            status=status,
            payment_method=None,
            created_at=_now(),
        )
        payment = replace(payment, **fields)  # type: ignore[arg-type]  # test data by keyword
        self._next_id += 1
        self.payments[order_id] = payment
        return payment

    async def claim(self, request: PaymentRequest, lease_s: float) -> tuple[Payment, bool]:
        async with self._lock:
            existing = self.payments.get(request.order_id)
            if existing is not None:
                return existing, False
            payment = self._new(
                request.order_id,
                request.buyer_id,
                PaymentStatus.PROCESSING,
                amount=request.amount,
                currency=request.currency,
                payment_method=request.payment_method,
                event_id=request.event_id,
                lease_until=_now() + timedelta(seconds=lease_s),
            )
            return payment, True

    async def take_over(self, payment_id: int, lease_s: float) -> Payment | None:
        async with self._lock:
            for order_id, payment in self.payments.items():
                if payment.id == payment_id and not payment.is_final and (payment.lease_until or _now()) <= _now():
                    taken = replace(payment, lease_until=_now() + timedelta(seconds=lease_s))
                    self.payments[order_id] = taken
                    return taken
            return None

    async def release(self, payment_id: int) -> None:
        for order_id, payment in self.payments.items():
            if payment.id == payment_id:
                self.payments[order_id] = replace(payment, lease_until=None)

    async def record_outcome(self, payment: Payment, charge: ChargeResult) -> Payment:
        async with self._lock:
            current = self.payments[payment.order_id]
            if current.is_final:
                return current
            final = current.with_outcome(charge, _now())
            if final.status is PaymentStatus.SUCCEEDED and current.cancelled_at is not None:
                final = replace(final, refund_requested_at=_now(), lease_until=current.lease_until)
            self.payments[payment.order_id] = final
            return final

    async def get_by_order_id(self, order_id: int) -> Payment | None:
        return self.payments.get(order_id)

    async def cancel(self, cancellation: OrderCancellation, lease_s: float) -> tuple[Payment, str]:
        async with self._lock:
            current = self.payments.get(cancellation.order_id)
            if current is None:
                created = self._new(
                    cancellation.order_id,
                    cancellation.buyer_id or "",
                    PaymentStatus.CANCELLED,
                    cancelled_at=_now(),
                    refund_reason=cancellation.reason,
                    published_at=_now(),
                )
                return created, "before_charge"
            if current.cancelled_at is not None or current.status not in (
                PaymentStatus.PENDING,
                PaymentStatus.PROCESSING,
                PaymentStatus.SUCCEEDED,
            ):
                return current, "final"
            marked = replace(current, cancelled_at=_now(), refund_reason=cancellation.reason)
            if current.status is PaymentStatus.SUCCEEDED:
                marked = replace(marked, refund_requested_at=_now(), lease_until=_now() + timedelta(seconds=lease_s))
            self.payments[current.order_id] = marked
            return marked, "after_success" if current.status is PaymentStatus.SUCCEEDED else "in_flight"

    async def claim_refund(self, order_id: int, reason: str | None, lease_s: float) -> Payment | None:
        async with self._lock:
            current = self.payments.get(order_id)
            if current is None or current.status is not PaymentStatus.SUCCEEDED:
                return None
            if current.refund_requested_at is not None and (current.lease_until or _now()) > _now():
                return None
            claimed = replace(
                current,
                refund_requested_at=_now(),
                refund_reason=reason or current.refund_reason,
                lease_until=_now() + timedelta(seconds=lease_s),
            )
            self.payments[order_id] = claimed
            return claimed

    async def take_over_refund(self, payment_id: int, lease_s: float) -> Payment | None:
        for payment in self.payments.values():
            if payment.id == payment_id and payment.refund_owed and (payment.lease_until or _now()) <= _now():
                return await self.claim_refund(payment.order_id, None, lease_s)
        return None

    async def record_refund(self, payment: Payment, refund: RefundResult) -> Payment:
        async with self._lock:
            current = self.payments[payment.order_id]
            if current.status is not PaymentStatus.SUCCEEDED:
                return current
            if refund.success:
                final = replace(
                    current,
                    status=PaymentStatus.REFUNDED,
                    refund_id=refund.refund_id,
                    refunded_at=_now(),
                    refund_requested_at=None,
                    lease_until=None,
                    published_at=None,
                )
            else:
                final = replace(current, refund_requested_at=None, lease_until=None)
            self.payments[payment.order_id] = final
            return final

    async def ping(self) -> bool:
        return True

    async def mark_published(self, confirmed: list[tuple[int, str]]) -> None:
        for order_id, payment in self.payments.items():
            if (payment.id, payment.status.value) in confirmed:
                self.payments[order_id] = replace(payment, published_at=_now())

    def expire_lease(self, order_id: int) -> None:
        payment = self.payments[order_id]
        self.payments[order_id] = replace(payment, lease_until=_now() - timedelta(seconds=1))


class CountingGateway:
    """Wraps a gateway and counts the calls it receives."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[ChargeRequest] = []
        self.refunds: list[RefundRequest] = []

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls.append(request)
        return await self.inner.charge(request)

    async def refund(self, request: RefundRequest) -> RefundResult:
        self.refunds.append(request)
        return await self.inner.refund(request)


class ExplodingGateway:
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        raise RuntimeError("gateway client crashed")

    async def refund(self, request: RefundRequest) -> RefundResult:
        raise RuntimeError("gateway client crashed")


class OpenGate:
    """A gateway gate that is always (or, with `down`, never) available."""

    def __init__(self) -> None:
        self.down = False
        self._changed = asyncio.Event()

    @property
    def available(self) -> bool:
        return not self.down

    def set_down(self, down: bool) -> None:
        self.down = down
        self._changed.set()

    async def wait_until_callable(self, timeout: float) -> bool:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.available


class RecordingOutcomes:
    """The outcomes' AMQP channel in memory: records what it is asked to publish (confirmed at
    once), or raises `failure` when one is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str]] = []  # (routing key, body, event id)
        self.failure: Exception | None = None
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def send(self, routing_key: str, body: bytes, event_id: str) -> None:
        if self.failure is not None:
            raise self.failure
        self.sent.append((routing_key, body, event_id))

    def bodies(self, routing_key: str) -> list[bytes]:
        return [body for key, body, _ in self.sent if key == routing_key]
