"""Service rules with an in-memory store and the simulated gateway."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from app.domain import (
    Disposition,
    FailureCode,
    PaymentMethod,
    PaymentMethodType,
    PaymentRequest,
    PaymentStatus,
)
from app.gateway import RetryingCharger, RetryPolicy, SimulatedGateway
from app.service.payments import PaymentService
from app.service.refunds import RefundService
from tests.fakes import CountingGateway, ExplodingGateway, InMemoryPaymentStore


def request(order_id: int = 1, card: str | None = "4242") -> PaymentRequest:
    return PaymentRequest(
        event_id=f"event-{order_id}",
        order_id=order_id,
        buyer_id="buyer-1",
        amount=Decimal("49.99"),
        currency="USD",
        payment_method=PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four=card),
    )


def make_service(gateway=None, store=None):
    store = store or InMemoryPaymentStore()
    gateway = gateway or CountingGateway(SimulatedGateway(delay_ms=0))
    charger = RetryingCharger(
        gateway, RetryPolicy(max_attempts=3, timeout_s=0.2, base_delay_s=0.001, max_delay_s=0.002)
    )
    return PaymentService(store, charger, RefundService(store, charger), lease_s=30), store, gateway


async def test_success_stores_succeeded_with_transaction_id() -> None:
    service, store, _ = make_service()
    result = await service.process(request(1))
    assert result.disposition is Disposition.PROCESSED
    assert result.payment.status is PaymentStatus.SUCCEEDED
    assert result.payment.transaction_id.startswith("txn_")
    assert store.payments[1].status is PaymentStatus.SUCCEEDED


async def test_duplicate_request_is_already_processed_with_same_payment_and_no_second_charge() -> None:
    service, _, gateway = make_service()
    first = await service.process(request(2))
    second = await service.process(request(2))
    assert second.disposition is Disposition.ALREADY_PROCESSED
    assert second.payment.id == first.payment.id
    assert second.payment.transaction_id == first.payment.transaction_id
    assert len(gateway.calls) == 1


async def test_declined_card_stores_failed_with_reason() -> None:
    service, store, _ = make_service()
    result = await service.process(request(3, card="0000"))
    assert result.payment.status is PaymentStatus.FAILED
    assert result.payment.failure_reason == "Card declined"
    assert result.payment.failure_code is FailureCode.CARD_DECLINED
    assert store.payments[3].failure_code is FailureCode.CARD_DECLINED


async def test_gateway_exception_stores_failed_gateway_error() -> None:
    service, _store, _ = make_service(gateway=ExplodingGateway())
    result = await service.process(request(4))
    assert result.payment.status is PaymentStatus.FAILED
    assert result.payment.failure_code is FailureCode.GATEWAY_ERROR
    assert result.payment.failure_reason == "Payment gateway unavailable"


async def test_replayed_failure_keeps_original_failure_code() -> None:
    service, _, _ = make_service()
    await service.process(request(5, card="0002"))
    replay = await service.process(request(5, card="0002"))
    assert replay.disposition is Disposition.ALREADY_PROCESSED
    assert replay.payment.failure_code is FailureCode.CARD_EXPIRED


async def test_concurrent_duplicates_charge_once() -> None:
    service, store, gateway = make_service()
    results = await asyncio.gather(*(service.process(request(6)) for _ in range(30)))
    assert len(gateway.calls) == 1
    assert {r.payment.id for r in results} == {store.payments[6].id}
    assert sum(r.disposition is Disposition.PROCESSED for r in results) == 1


async def test_live_lease_is_in_progress_and_expired_lease_is_taken_over_with_same_key() -> None:
    store = InMemoryPaymentStore()
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    service, _, _ = make_service(gateway=gateway, store=store)
    # A worker claimed the order and died before charging.
    await store.claim(request(7), lease_s=30)
    in_progress = await service.process(request(7))
    assert in_progress.disposition is Disposition.IN_PROGRESS
    assert not in_progress.should_publish
    assert gateway.calls == []
    store.expire_lease(7)
    taken = await service.process(request(7))
    assert taken.disposition is Disposition.PROCESSED
    assert taken.payment.status is PaymentStatus.SUCCEEDED
    assert [c.idempotency_key for c in gateway.calls] == ["order-7"]


async def test_rejected_request_fails_without_a_charge() -> None:
    from dataclasses import replace

    from app.domain import Rejection

    service, _store, gateway = make_service()
    rejected = replace(request(20), amount=None, rejection=Rejection(FailureCode.UNKNOWN, "Invalid totalAmount"))
    result = await service.process(rejected)
    assert (result.payment.status, result.payment.failure_code) == (PaymentStatus.FAILED, FailureCode.UNKNOWN)
    assert result.payment.failure_reason == "Invalid totalAmount"
    assert gateway.calls == []


async def test_conflicting_duplicate_is_not_charged_and_is_reported() -> None:
    from dataclasses import replace

    conflicts: list[tuple[int, list[str]]] = []
    store = InMemoryPaymentStore()
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    charger = RetryingCharger(gateway, RetryPolicy(max_attempts=1, timeout_s=1, base_delay_s=0.001, max_delay_s=0.002))
    service = PaymentService(
        store, charger, RefundService(store, charger), on_conflict=lambda o, f: conflicts.append((o, f))
    )
    await service.process(request(21))
    second = await service.process(replace(request(21), amount=Decimal("50.00"), buyer_id="someone-else"))
    assert second.disposition is Disposition.ALREADY_PROCESSED
    assert conflicts == [(21, ["amount", "buyerId"])]
    assert len(gateway.calls) == 1
