"""The HTTP gateway adapter against the shipped fake gateway, over real loopback sockets: request
shape, every class of answer, idempotent replays, keys in use, refused credentials, an outage
opening the breaker, and the API key kept out of every log."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from loguru import logger

from app.domain import CardBrand, FailureCode, PaymentMethod, PaymentMethodType
from app.gateway import (
    ChargeRequest,
    CircuitBreaker,
    CircuitState,
    GatewayOutage,
    GatewayTransientError,
    GatewayUnusableError,
    RefundRequest,
    RetryingCharger,
    RetryPolicy,
)
from app.gateway.fake import RunningFakeGateway, running_fake_gateway
from app.gateway.http import HttpGateway
from tests.support import ROOT, free_port, next_order_id

API_KEY = "sk_test_integration_7d41c9e2"


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeGateway]:
    async with running_fake_gateway(api_key=API_KEY) as running:
        yield running


@pytest.fixture
async def http(fake: RunningFakeGateway) -> AsyncIterator[HttpGateway]:
    gateway = HttpGateway(fake.url, API_KEY, timeout_s=2.0, max_connections=16)
    yield gateway
    await gateway.aclose()


def charge(
    card: str = "4242", amount: str = "49.99", currency: str = "USD", order_id: int | None = None
) -> ChargeRequest:
    order_id = order_id or next_order_id()
    method = PaymentMethod(PaymentMethodType.CREDIT_CARD, card, CardBrand.VISA, "Jane Q Holder", 12, 2030)
    return ChargeRequest(f"order-{order_id}", order_id, Decimal(amount), currency, method, buyer_id="buyer-9")


def refund(request: ChargeRequest, transaction_id: str) -> RefundRequest:
    order_id = request.order_id
    return RefundRequest(f"refund-order-{order_id}", order_id, transaction_id, request.amount, request.currency, "gone")


def policy(timeout: float = 2.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, timeout_s=timeout, base_delay_s=0.01, max_delay_s=0.05)


def key_view(fake: RunningFakeGateway, key: str) -> dict:
    audit = fake.state.audit()
    return next(view for view in audit["charges"] + audit["refunds"] if view["idempotencyKey"] == key)


@pytest.mark.parametrize(
    ("amount", "currency", "minor", "sent"),
    [("1200", "JPY", 1200, "jpy"), ("49.99", "USD", 4999, "usd"), ("1.234", "KWD", 1234, "kwd")],
)
async def test_request_shape_seen_by_the_gateway(
    fake: RunningFakeGateway, http: HttpGateway, amount: str, currency: str, minor: int, sent: str
) -> None:
    request = charge(amount=amount, currency=currency)
    result = await http.charge(request)
    assert result.success and result.transaction_id.startswith("ch_")
    view = key_view(fake, request.idempotency_key)
    assert view["request"] == {
        "amount": minor,
        "currency": sent,
        "description": f"Foodies order {request.order_id}",
        "metadata": {"orderId": str(request.order_id), "buyerId": "buyer-9"},
        "paymentMethod": {
            "type": "CREDIT_CARD",
            "cardLastFour": "4242",
            "cardBrand": "VISA",
            "expirationMonth": 12,
            "expirationYear": 2030,
        },
    }
    assert "Holder" not in str(fake.state.audit())


@pytest.mark.parametrize(
    ("card", "code", "reason"),
    [
        ("0000", FailureCode.CARD_DECLINED, "Card declined"),
        ("0001", FailureCode.INSUFFICIENT_FUNDS, "Insufficient funds"),
        ("0002", FailureCode.CARD_EXPIRED, "Card expired"),
        ("7777", FailureCode.FRAUD_SUSPECTED, "Fraud suspected"),
    ],
)
async def test_declines_with_the_simulated_gateways_reasons(
    http: HttpGateway, card: str, code: FailureCode, reason: str
) -> None:
    result = await RetryingCharger(http, policy()).charge(charge(card))
    assert (result.success, result.failure_code, result.failure_reason, result.attempts) == (False, code, reason, 1)


async def test_flaky_unavailable_and_silent_cards(fake: RunningFakeGateway, http: HttpGateway) -> None:
    flaky = charge("3333")
    assert (await RetryingCharger(http, policy()).charge(flaky)).attempts == 3
    assert key_view(fake, flaky.idempotency_key)["statuses"] == [503, 503, 200]
    unavailable = await RetryingCharger(http, policy()).charge(charge("9999"))
    assert (unavailable.failure_code, unavailable.attempts) == (FailureCode.GATEWAY_ERROR, 3)
    silent = await RetryingCharger(http, policy(timeout=0.3)).charge(charge("6666"))
    assert (silent.failure_code, silent.failure_reason) == (FailureCode.TIMEOUT, "Payment gateway timeout")


async def test_same_key_replays_the_first_answer_and_charges_once(fake: RunningFakeGateway, http: HttpGateway) -> None:
    request = charge()
    first, again = await http.charge(request), await http.charge(request)
    assert first.transaction_id == again.transaction_id
    declined = charge("0000")
    assert (await http.charge(declined)) == (await http.charge(declined))
    assert key_view(fake, request.idempotency_key)["seen"] == 2
    assert fake.state.audit()["orders"][str(request.order_id)] == {"captured": 1, "refunded": 0}


async def test_a_key_in_use_is_transient_and_the_retry_gets_the_one_charge(
    fake: RunningFakeGateway, http: HttpGateway
) -> None:
    fake.state.control({"latency_ms": 300})
    request = charge()
    answers = await asyncio.gather(http.charge(request), http.charge(request), return_exceptions=True)
    assert sorted(type(a).__name__ for a in answers) == ["ChargeResult", "GatewayTransientError"]
    in_use = next(a for a in answers if isinstance(a, GatewayTransientError))
    assert "409" in str(in_use)
    retried = await asyncio.gather(*(RetryingCharger(http, policy()).charge(request) for _ in range(2)))
    assert retried[0].transaction_id == retried[1].transaction_id
    assert fake.state.audit()["orders"][str(request.order_id)]["captured"] == 1


async def test_refunds_once_per_key_declined_for_8888_and_already_refunded_counts(
    fake: RunningFakeGateway, http: HttpGateway
) -> None:
    charger = RetryingCharger(http, policy())
    paid = charge()
    charged = await charger.charge(paid)
    first = await charger.refund(refund(paid, charged.transaction_id))
    again = await charger.refund(refund(paid, charged.transaction_id))
    assert first.success and first.refund_id.startswith("re_") and again == first
    other_key = RefundRequest("refund-by-hand", paid.order_id, charged.transaction_id, None, None)
    assert (await charger.refund(other_key)).success  # 400 charge_already_refunded
    assert fake.state.audit()["orders"][str(paid.order_id)] == {"captured": 1, "refunded": 1}
    kept = charge("8888")
    kept_charge = await charger.charge(kept)
    declined = await charger.refund(refund(kept, kept_charge.transaction_id))
    assert (declined.success, declined.failure_reason) == (False, "Refund declined")


async def test_a_wrong_or_revoked_key_makes_the_gateway_unusable_and_orders_wait(fake: RunningFakeGateway) -> None:
    wrong = HttpGateway(fake.url, "sk_test_wrong", timeout_s=2.0)
    try:
        with pytest.raises(GatewayUnusableError):
            await wrong.charge(charge())
    finally:
        await wrong.aclose()
    fake.state.control({"unauthorized_seconds": 30})
    right = HttpGateway(fake.url, API_KEY, timeout_s=2.0)
    breaker = CircuitBreaker(open_seconds=60)
    try:
        with pytest.raises(GatewayOutage):
            await RetryingCharger(right, policy(), breaker=breaker).charge(charge())
    finally:
        await right.aclose()
    assert breaker.state is CircuitState.OPEN


async def test_an_outage_opens_the_breaker_no_order_fails_and_the_trial_closes_it(
    fake: RunningFakeGateway, http: HttpGateway
) -> None:
    breaker = CircuitBreaker(open_seconds=0.5)
    charger = RetryingCharger(http, policy(), breaker=breaker)
    fake.state.control({"outage_seconds": 0.6})
    orders = [charge() for _ in range(12)]
    outcomes = await asyncio.gather(*(charger.charge(o) for o in orders), return_exceptions=True)
    assert all(isinstance(outcome, GatewayOutage) for outcome in outcomes), outcomes
    assert breaker.state is CircuitState.OPEN
    assert await breaker.wait_until_callable(5.0)
    await asyncio.sleep(0.2)  # the outage is over by now
    results = [await charger.charge(o) for o in orders]
    assert all(r.success for r in results) and breaker.state is CircuitState.CLOSED
    orders_seen = fake.state.audit()["orders"]
    assert all(orders_seen[str(o.order_id)]["captured"] == 1 for o in orders)


async def test_connection_refused_is_transient() -> None:
    gateway = HttpGateway(f"http://127.0.0.1:{free_port()}", API_KEY, timeout_s=1.0)
    try:
        with pytest.raises(GatewayTransientError):
            await gateway.charge(charge())
    finally:
        await gateway.aclose()


async def test_the_api_key_never_reaches_a_log(fake: RunningFakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message) + repr(message.record["extra"])), level="TRACE")
    caplog.set_level(logging.DEBUG)  # httpx and httpcore write their request traces at DEBUG
    gateway = HttpGateway(fake.url, API_KEY, timeout_s=0.5)
    try:
        charger = RetryingCharger(gateway, policy(timeout=0.5), breaker=CircuitBreaker())
        for card in ("4242", "0000", "3333"):  # a success, a decline, transient errors
            await charger.charge(charge(card))
        fake.state.control({"unauthorized_seconds": 5})
        with pytest.raises(GatewayOutage) as outage:
            await charger.charge(charge())
        lines.append(repr(outage.value) + repr(gateway))
    finally:
        logger.remove(sink)
        await gateway.aclose()
    captured = "\n".join(lines) + caplog.text
    assert "order" in captured  # the logs were captured at all
    assert API_KEY not in captured


async def test_the_fake_refuses_requests_without_a_key_and_can_be_reset(fake: RunningFakeGateway) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        no_key = await client.post("/v1/charges", json={}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert no_key.status_code == 400
        assert (await client.post("/_control", json={"latency_ms": 5, "error_rate": 1})).json()["error_rate"] == 1
        sent = await client.post(
            "/v1/charges", json={"amount": 1}, headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "k"}
        )
        assert sent.status_code == 500
        assert (await client.get("/_audit")).json()["totals"]["requests"] == 1
        assert (await client.post("/_reset")).status_code == 200
        assert (await client.get("/_audit")).json()["totals"]["requests"] == 0
        assert (await client.get("/_control")).json()["error_rate"] == 0


async def test_the_module_runs_as_a_command() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.gateway.fake_server", "--port", str(port), "--api-key", API_KEY),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    if (await client.get("/_health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            gateway = HttpGateway(f"http://127.0.0.1:{port}", API_KEY)
            try:
                assert (await gateway.charge(charge())).success
            finally:
                await gateway.aclose()
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status names it.
        assert await asyncio.wait_for(process.wait(), 10) in (0, -15)
