"""Cancellations and refunds in the service layer, every row of the cancellation table, with
an in-memory store and the simulated gateway."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from app.domain import OrderCancellation, PaymentMethod, PaymentMethodType, PaymentRequest, PaymentStatus
from app.gateway import RetryingCharger, RetryPolicy, SimulatedGateway
from app.service.payments import PaymentService
from app.service.refunds import RefundOutcome, RefundService
from tests.fakes import CountingGateway, InMemoryPaymentStore


def request(order_id: int, card: str = "4242") -> PaymentRequest:
    return PaymentRequest(
        event_id=f"event-{order_id}",
        order_id=order_id,
        buyer_id="buyer-1",
        amount=Decimal("49.99"),
        currency="USD",
        payment_method=PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four=card),
    )


def cancel(order_id: int) -> OrderCancellation:
    return OrderCancellation(order_id=order_id, buyer_id="buyer-1", reason="Customer changed their mind")


def wire(delay_ms: int = 0):
    store = InMemoryPaymentStore()
    gateway = CountingGateway(SimulatedGateway(delay_ms=delay_ms))
    charger = RetryingCharger(gateway, RetryPolicy(max_attempts=3, timeout_s=2, base_delay_s=0.001, max_delay_s=0.002))
    seen: list[str] = []
    refunds = RefundService(store, charger, lease_s=30, observe=seen.append)
    return PaymentService(store, charger, refunds, lease_s=30), refunds, store, gateway, seen


async def test_cancel_before_stock_confirmed_records_cancelled_and_never_charges() -> None:
    payments, refunds, _store, gateway, _ = wire()
    result = await refunds.cancel(cancel(1))
    assert (result.case, result.payment.status) == ("before_charge", PaymentStatus.CANCELLED)
    later = await payments.process(request(1))
    assert later.payment.status is PaymentStatus.CANCELLED
    assert later.payment.announces is None  # nothing is published for it
    assert gateway.calls == [] and gateway.refunds == []


async def test_cancel_during_the_charge_refunds_instead_of_announcing_success() -> None:
    payments, refunds, _store, gateway, seen = wire(delay_ms=200)
    charging = asyncio.create_task(payments.process(request(2)))
    await asyncio.sleep(0.05)  # the charge is in flight
    result = await refunds.cancel(cancel(2))
    assert result.case == "in_flight"
    final = (await charging).payment
    assert final.status is PaymentStatus.REFUNDED
    assert final.announces is PaymentStatus.REFUNDED
    assert [r.idempotency_key for r in gateway.refunds] == ["refund-order-2"]
    assert seen == ["refunded"]


async def test_cancel_after_success_refunds_once_even_when_delivered_twice() -> None:
    payments, refunds, _store, gateway, _ = wire()
    await payments.process(request(3))
    first, second = await refunds.cancel(cancel(3)), await refunds.cancel(cancel(3))
    assert (first.case, first.payment.status) == ("after_success", PaymentStatus.REFUNDED)
    assert first.payment.refund_id and first.payment.refund_id.startswith("re_")
    assert (second.case, second.payment.status) == ("final", PaymentStatus.REFUNDED)
    assert len(gateway.refunds) == 1


async def test_cancel_after_failure_does_nothing() -> None:
    payments, refunds, _store, gateway, _ = wire()
    await payments.process(request(4, card="0000"))
    result = await refunds.cancel(cancel(4))
    assert (result.case, result.payment.status) == ("final", PaymentStatus.FAILED)
    assert gateway.refunds == []


async def test_declined_refund_leaves_succeeded_and_nothing_to_announce() -> None:
    payments, refunds, _store, _gateway, seen = wire()
    await payments.process(request(5, card="8888"))
    result = await refunds.cancel(cancel(5))
    assert result.payment.status is PaymentStatus.SUCCEEDED
    assert not result.payment.refund_owed
    assert result.payment.announces is None  # never payment.succeeded for a cancelled order
    assert seen == ["declined"]


async def test_operator_refund_cases() -> None:
    payments, refunds, _store, gateway, _ = wire()
    announced = []

    async def announce(payment):
        announced.append(payment.status)
        return True

    await payments.process(request(6))
    await payments.process(request(7, card="0000"))
    await payments.process(request(8, card="8888"))
    done = await refunds.refund(6, "duplicate order", announce)
    assert (done.outcome, done.payment.status, done.payment.refund_reason) == (
        RefundOutcome.REFUNDED,
        PaymentStatus.REFUNDED,
        "duplicate order",
    )
    assert (await refunds.refund(6, None, announce)).outcome is RefundOutcome.REFUNDED  # idempotent
    assert (await refunds.refund(7, None, announce)).outcome is RefundOutcome.NOT_REFUNDABLE
    assert (await refunds.refund(99, None, announce)).outcome is RefundOutcome.NOT_FOUND
    declined = await refunds.refund(8, None, announce)
    assert (declined.outcome, declined.payment.status) == (RefundOutcome.DECLINED, PaymentStatus.SUCCEEDED)
    assert announced == [PaymentStatus.REFUNDED]
    assert [r.idempotency_key for r in gateway.refunds] == ["refund-order-6", "refund-order-8"]
