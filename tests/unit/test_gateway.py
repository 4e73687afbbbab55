"""The simulated gateway's card table, refunds and idempotency; retries and the breaker around a gateway."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.domain import ChargeResult, FailureCode, Payment, PaymentMethod, PaymentMethodType, PaymentStatus
from app.gateway import (
    ChargeRequest,
    CircuitBreaker,
    CircuitState,
    GatewayOutage,
    GatewayTransientError,
    GatewayUnusableError,
    RefundRequest,
    RefundResult,
    RetryingCharger,
    RetryPolicy,
    SimulatedGateway,
)
from tests.fakes import CountingGateway


def charge(card: str | None, key: str = "order-1", order_id: int = 1) -> ChargeRequest:
    method = PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four=card)
    return ChargeRequest(key, order_id, Decimal("10.00"), "USD", method, buyer_id="buyer-1")


def refund_of(order_id: int, transaction_id: str) -> RefundRequest:
    return RefundRequest(f"refund-order-{order_id}", order_id, transaction_id, Decimal("10.00"), "USD", "changed mind")


def test_requests_of_a_stored_payment_use_the_orders_keys() -> None:
    method = PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four="4242")
    paid = Payment(7, 42, "buyer-3", Decimal("9.99"), "EUR", PaymentStatus.SUCCEEDED, method, datetime.now(UTC))
    paid.transaction_id, paid.refund_reason = "txn_1", "cancelled by the buyer"
    assert ChargeRequest.of(paid) == ChargeRequest("order-42", 42, Decimal("9.99"), "EUR", method, buyer_id="buyer-3")
    assert RefundRequest.of(paid) == RefundRequest(
        "refund-order-42", 42, "txn_1", Decimal("9.99"), "EUR", "cancelled by the buyer"
    )
    paid.amount = None
    with pytest.raises(ValueError, match="no amount"):
        ChargeRequest.of(paid)


# ---------------------------------------------------------------- simulated gateway
@pytest.mark.parametrize(
    ("card", "code", "reason"),
    [
        ("0000", FailureCode.CARD_DECLINED, "Card declined"),
        ("0001", FailureCode.INSUFFICIENT_FUNDS, "Insufficient funds"),
        ("0002", FailureCode.CARD_EXPIRED, "Card expired"),
        ("7777", FailureCode.FRAUD_SUSPECTED, "Fraud suspected"),
    ],
)
async def test_declining_cards(card: str, code: FailureCode, reason: str) -> None:
    result = await SimulatedGateway(delay_ms=0).charge(charge(card))
    assert not result.success
    assert (result.failure_code, result.failure_reason) == (code, reason)


# 1111/2222/4444 declined in the first card table; the well-known test numbers end in 1111, 4242, 4444, 0005.
@pytest.mark.parametrize("card", ["1111", "2222", "4444", "4242", "0005", "8888", "5555", None])
async def test_other_cards_succeed_with_txn_uuid(card: str | None) -> None:
    result = await SimulatedGateway(delay_ms=0).charge(charge(card))
    assert result.success
    assert result.transaction_id.startswith("txn_") and len(result.transaction_id) == 4 + 36


@pytest.mark.parametrize("card", ["0000", "0001", "3333", "6666", "7777", "9999"])
async def test_always_succeed_approves_every_charge(card: str) -> None:
    result = await SimulatedGateway(delay_ms=0, always_succeed=True).charge(charge(card))
    assert result.success


async def test_same_key_same_outcome_and_transaction_id_even_in_another_instance() -> None:
    gateway = SimulatedGateway(delay_ms=0)
    first = await gateway.charge(charge("4242", "order-9"))
    again = await gateway.charge(charge("4242", "order-9"))
    elsewhere = await SimulatedGateway(delay_ms=0).charge(charge("4242", "order-9"))
    other = await gateway.charge(charge("4242", "order-10"))
    assert first.transaction_id == again.transaction_id == elsewhere.transaction_id
    assert other.transaction_id != first.transaction_id


async def test_delay_is_applied() -> None:
    started = time.perf_counter()
    await SimulatedGateway(delay_ms=50).charge(charge("4242"))
    assert time.perf_counter() - started >= 0.045


async def test_flaky_card_fails_twice_then_succeeds() -> None:
    gateway = SimulatedGateway(delay_ms=0)
    for _ in range(2):
        with pytest.raises(GatewayTransientError):
            await gateway.charge(charge("3333"))
    assert (await gateway.charge(charge("3333"))).success


async def test_unavailable_card_fails_on_every_attempt_and_silent_card_never_answers() -> None:
    gateway = SimulatedGateway(delay_ms=0)
    for _ in range(5):
        with pytest.raises(GatewayTransientError):
            await gateway.charge(charge("9999"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await gateway.charge(charge("6666"))


async def test_refund_is_idempotent_by_key_in_every_instance() -> None:
    gateway = SimulatedGateway(delay_ms=0)
    paid = await gateway.charge(charge("4242", "order-5", order_id=5))
    first = await gateway.refund(refund_of(5, paid.transaction_id))
    again = await SimulatedGateway(delay_ms=0).refund(refund_of(5, paid.transaction_id))
    other = await gateway.refund(refund_of(6, "txn_other"))
    assert first.success and first.refund_id.startswith("re_") and len(first.refund_id) == 3 + 36
    assert again == first
    assert other.refund_id != first.refund_id


async def test_refund_of_the_refund_declined_card_is_declined_unless_always_succeed() -> None:
    paid = await SimulatedGateway(delay_ms=0).charge(charge("8888", "order-8", order_id=8))
    declined = await SimulatedGateway(delay_ms=0).refund(refund_of(8, paid.transaction_id))
    assert declined == RefundResult(False, None, "Refund declined")
    approved = await SimulatedGateway(delay_ms=0, always_succeed=True).refund(refund_of(8, paid.transaction_id))
    assert approved.success


# ---------------------------------------------------------------- retries
class Scripted:
    """A gateway answering from a script: each item is a result to return or an exception to raise."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.keys: list[str] = []

    async def _next(self, key: str) -> object:
        self.keys.append(key)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        return await self._next(request.idempotency_key)  # type: ignore[return-value]  # scripted

    async def refund(self, request: RefundRequest) -> RefundResult:
        return await self._next(request.idempotency_key)  # type: ignore[return-value]  # scripted


class Observer:
    def __init__(self) -> None:
        self.attempts: list[tuple[int, str]] = []
        self.retries: list[tuple[int, str]] = []

    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None:
        self.attempts.append((attempt, result))

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None:
        self.retries.append((attempt, result))


def policy(attempts: int = 3, timeout: float = 0.1) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, timeout_s=timeout, base_delay_s=0.001, max_delay_s=0.005)


async def test_retry_flaky_card_succeeds_on_third_attempt_with_one_key_and_is_observed() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    observer = Observer()
    result = await RetryingCharger(gateway, policy(), observer).charge(charge("3333", "order-77"))
    assert result.success and result.attempts == 3
    assert [c.idempotency_key for c in gateway.calls] == ["order-77"] * 3
    assert observer.attempts == [(1, "transient"), (2, "transient"), (3, "ok")]
    assert observer.retries == [(1, "transient"), (2, "transient")]


async def test_unavailable_card_exhausts_retries_as_gateway_error() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy(attempts=4)).charge(charge("9999"))
    assert (result.failure_code, result.failure_reason) == (FailureCode.GATEWAY_ERROR, "Payment gateway unavailable")
    assert len(gateway.calls) == 4


async def test_silent_card_times_out() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy(attempts=2, timeout=0.05)).charge(charge("6666"))
    assert (result.failure_code, result.failure_reason) == (FailureCode.TIMEOUT, "Payment gateway timeout")
    assert len(gateway.calls) == 2


async def test_decline_is_final_at_once_and_counts_as_an_answer() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    observer = Observer()
    breaker = CircuitBreaker(min_calls=2, window_calls=4)
    charger = RetryingCharger(gateway, policy(), observer, breaker=breaker)
    result = await charger.charge(charge("0000"))
    assert result.failure_code is FailureCode.CARD_DECLINED
    assert len(gateway.calls) == 1
    assert observer.attempts == [(1, "declined")]
    for order_id in range(2, 6):
        await charger.charge(charge("0001", f"order-{order_id}", order_id))
    assert breaker.state is CircuitState.CLOSED


async def test_an_unexpected_fault_fails_the_charge_without_retry() -> None:
    gateway = Scripted(RuntimeError("client bug"))
    result = await RetryingCharger(gateway, policy()).charge(charge("4242"))
    assert result.failure_code is FailureCode.GATEWAY_ERROR
    assert len(gateway.keys) == 1


async def test_refund_retried_with_one_key_then_refunded() -> None:
    gateway = Scripted(GatewayTransientError("503"), TimeoutError(), RefundResult.refunded("re_1"))
    result = await RetryingCharger(gateway, policy()).refund(refund_of(3, "txn_3"))
    assert result == RefundResult(True, "re_1", None)
    assert gateway.keys == ["refund-order-3"] * 3


async def test_refund_that_never_gets_an_answer_waits_and_a_broken_client_leaves_it_to_an_operator() -> None:
    with pytest.raises(GatewayOutage):
        await RetryingCharger(Scripted(GatewayTransientError("503")), policy()).refund(refund_of(3, "txn_3"))
    broken = await RetryingCharger(Scripted(RuntimeError("bug")), policy()).refund(refund_of(3, "txn_3"))
    assert not broken.success and broken.failure_reason == "Refund failed: RuntimeError"


async def test_unusable_gateway_is_an_outage_at_once_and_opens_the_breaker() -> None:
    gateway = Scripted(GatewayUnusableError("HTTP 401"))
    breaker = CircuitBreaker(open_seconds=60)
    observer = Observer()
    charger = RetryingCharger(gateway, policy(), observer, breaker=breaker)
    with pytest.raises(GatewayOutage):
        await charger.charge(charge("4242"))
    assert len(gateway.keys) == 1 and observer.attempts == [(1, "unusable")]
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(GatewayOutage):
        await charger.refund(refund_of(1, "txn_1"))
    assert len(gateway.keys) == 1  # the open breaker let no call through


async def test_open_breaker_refuses_without_calling_the_gateway() -> None:
    breaker = CircuitBreaker(open_seconds=60, min_calls=1, window_calls=1)
    breaker.acquire().failure()
    assert breaker.state is CircuitState.OPEN
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    with pytest.raises(GatewayOutage):
        await RetryingCharger(gateway, policy(), breaker=breaker).charge(charge("4242"))
    assert gateway.calls == []


async def test_a_single_failing_card_fails_alone_and_leaves_the_breaker_closed() -> None:
    breaker = CircuitBreaker(open_seconds=60)
    charger = RetryingCharger(SimulatedGateway(delay_ms=0), policy(), breaker=breaker)
    for order_id in range(1, 10):  # plenty of good traffic, as in production
        assert (await charger.charge(charge("4242", f"order-{order_id}"))).success
    # The first time its retries run out the order gets one more round (an outage may be
    # starting that the breaker has not seen enough of yet); the second time it fails.
    with pytest.raises(GatewayOutage):
        await charger.charge(charge("9999", "order-99"))
    result = await charger.charge(charge("9999", "order-99"))
    assert result.failure_code is FailureCode.GATEWAY_ERROR
    flaky = await charger.charge(charge("3333", "order-98"))
    assert flaky.success
    assert breaker.state is CircuitState.CLOSED


async def test_retries_running_out_while_the_breaker_opened_make_the_order_wait() -> None:
    breaker = CircuitBreaker(open_seconds=60, min_calls=4, window_calls=20)
    gateway = CountingGateway(Scripted(GatewayTransientError("503 outage")))
    charger = RetryingCharger(gateway, policy(attempts=3), breaker=breaker)
    outcomes = await asyncio.gather(
        *(charger.charge(charge("4242", f"order-{i}", i)) for i in range(1, 4)), return_exceptions=True
    )
    assert all(isinstance(outcome, GatewayOutage) for outcome in outcomes), outcomes
    assert breaker.state is CircuitState.OPEN
    assert len(gateway.calls) < 9  # attempts stopped once the breaker opened


async def test_the_last_attempt_opening_the_breaker_makes_the_order_wait_not_fail() -> None:
    breaker = CircuitBreaker(open_seconds=60, min_calls=3, window_calls=20)
    gateway = CountingGateway(Scripted(GatewayTransientError("503 outage")))
    with pytest.raises(GatewayOutage):
        await RetryingCharger(gateway, policy(attempts=3), breaker=breaker).charge(charge("4242"))
    assert len(gateway.calls) == 3 and breaker.state is CircuitState.OPEN


async def test_half_open_trial_decides_and_its_failure_is_an_outage() -> None:
    now = [0.0]
    breaker = CircuitBreaker(open_seconds=10, min_calls=1, window_calls=1, clock=lambda: now[0])
    breaker.acquire().failure()
    now[0] = 10.0
    gateway = Scripted(GatewayTransientError("still down"))
    charger = RetryingCharger(gateway, policy(), breaker=breaker)
    with pytest.raises(GatewayOutage):
        await charger.charge(charge("4242"))
    assert len(gateway.keys) == 1  # the trial failed: no second attempt through an open breaker
    assert breaker.state is CircuitState.OPEN
    now[0] = 20.0
    ok = RetryingCharger(SimulatedGateway(delay_ms=0), policy(), breaker=breaker)
    assert (await ok.charge(charge("4242"))).success
    assert breaker.state is CircuitState.CLOSED
