"""The simulated gateway's card table, idempotency, and the retry policy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.domain import FailureCode, PaymentMethod, PaymentMethodType
from app.gateway import ChargeRequest, GatewayTransientError, RetryingCharger, RetryPolicy, SimulatedGateway
from tests.fakes import CountingGateway


def charge(card: str | None, key: str = "order-1") -> ChargeRequest:
    return ChargeRequest(key, 1, Decimal("10.00"), "USD", PaymentMethod(PaymentMethodType.CREDIT_CARD, card_last_four=card))


@pytest.mark.parametrize(
    "card, code, reason",
    [
        ("0000", FailureCode.CARD_DECLINED, "Card declined"),
        ("1111", FailureCode.INSUFFICIENT_FUNDS, "Insufficient funds"),
        ("0001", FailureCode.INSUFFICIENT_FUNDS, "Insufficient funds"),
        ("2222", FailureCode.CARD_EXPIRED, "Card expired"),
        ("0002", FailureCode.CARD_EXPIRED, "Card expired"),
        ("7777", FailureCode.FRAUD_SUSPECTED, "Fraud suspected"),
    ],
)
async def test_declining_cards(card: str, code: FailureCode, reason: str) -> None:
    result = await SimulatedGateway(delay_ms=0).charge(charge(card))
    assert not result.success
    assert (result.failure_code, result.failure_reason) == (code, reason)


@pytest.mark.parametrize("card", ["4242", "5555", None])
async def test_other_cards_succeed_with_txn_uuid(card: str | None) -> None:
    result = await SimulatedGateway(delay_ms=0).charge(charge(card))
    assert result.success
    assert result.transaction_id.startswith("txn_") and len(result.transaction_id) == 4 + 36


@pytest.mark.parametrize("card", ["0000", "4444", "6666", "7777"])
async def test_always_succeed(card: str) -> None:
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
    import time

    started = time.perf_counter()
    await SimulatedGateway(delay_ms=50).charge(charge("4242"))
    assert time.perf_counter() - started >= 0.045


async def test_flaky_card_fails_twice_then_succeeds() -> None:
    gateway = SimulatedGateway(delay_ms=0)
    for _ in range(2):
        with pytest.raises(GatewayTransientError):
            await gateway.charge(charge("3333"))
    assert (await gateway.charge(charge("3333"))).success


def policy(attempts: int = 3, timeout: float = 0.1) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, timeout_s=timeout, base_delay_s=0.001, max_delay_s=0.005)


async def test_retry_flaky_card_succeeds_on_third_attempt_with_one_key() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy()).charge(charge("3333", "order-77"))
    assert result.success and result.attempts == 3
    assert [c.idempotency_key for c in gateway.calls] == ["order-77"] * 3


async def test_unavailable_gateway_exhausts_retries_as_gateway_error() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy(attempts=4)).charge(charge("4444"))
    assert (result.failure_code, result.failure_reason) == (FailureCode.GATEWAY_ERROR, "Payment gateway unavailable")
    assert len(gateway.calls) == 4


async def test_silent_gateway_times_out() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy(attempts=2, timeout=0.05)).charge(charge("6666"))
    assert result.failure_code is FailureCode.TIMEOUT
    assert len(gateway.calls) == 2


async def test_decline_is_final_at_once() -> None:
    gateway = CountingGateway(SimulatedGateway(delay_ms=0))
    result = await RetryingCharger(gateway, policy()).charge(charge("0000"))
    assert result.failure_code is FailureCode.CARD_DECLINED
    assert len(gateway.calls) == 1
