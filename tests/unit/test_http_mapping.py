"""The HTTP gateway adapter without a network: request shape and the mapping of every kind of answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from loguru import logger

from app.config import load_settings
from app.domain import CardBrand, FailureCode, PaymentMethod, PaymentMethodType
from app.gateway import (
    ChargeRequest,
    GatewayTransientError,
    GatewayUnusableError,
    RefundRequest,
    RefundResult,
    SimulatedGateway,
    gateway_from,
)
from app.gateway.http import HttpGateway

KEY = "sk_test_unit_5f1c2a"
METHOD = PaymentMethod(PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA, "Jane Q Holder", 12, 2030)


def charge(amount: str = "49.99", currency: str = "USD", order_id: int = 12345) -> ChargeRequest:
    return ChargeRequest(f"order-{order_id}", order_id, Decimal(amount), currency, METHOD, buyer_id="buyer-7")


def refund() -> RefundRequest:
    return RefundRequest("refund-order-12345", 12345, "ch_1", Decimal("49.99"), "USD", "changed mind")


def gateway(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None) -> HttpGateway:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return answer(request)

    return HttpGateway("https://gateway.test/", KEY, transport=httpx.MockTransport(handler))


def error(status: int, **fields: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json={"error": fields})


async def test_charge_request_has_exactly_the_documented_shape() -> None:
    seen: list[httpx.Request] = []
    ok = gateway(lambda _: httpx.Response(200, json={"id": "ch_9", "status": "succeeded"}), seen)
    result = await ok.charge(charge())
    assert (result.success, result.transaction_id) == (True, "ch_9")
    (sent,) = seen
    assert (sent.method, str(sent.url)) == ("POST", "https://gateway.test/v1/charges")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["idempotency-key"] == "order-12345"
    assert json.loads(sent.content) == {
        "amount": 4999,
        "currency": "usd",
        "description": "Foodies order 12345",
        "metadata": {"orderId": "12345", "buyerId": "buyer-7"},
        "paymentMethod": {
            "type": "CREDIT_CARD",
            "cardLastFour": "4242",
            "cardBrand": "VISA",
            "expirationMonth": 12,
            "expirationYear": 2030,
        },
    }
    assert b"Jane" not in sent.content and b"Holder" not in sent.content


@pytest.mark.parametrize(
    ("amount", "currency", "minor", "sent_currency"),
    [("1000", "JPY", 1000, "jpy"), ("49.99", "usd", 4999, "usd"), ("12.345", "KWD", 12345, "kwd")],
)
async def test_amount_in_minor_units_and_currency_in_lower_case(
    amount: str, currency: str, minor: int, sent_currency: str
) -> None:
    seen: list[httpx.Request] = []
    await gateway(lambda _: httpx.Response(200, json={"id": "ch_1"}), seen).charge(charge(amount, currency))
    body = json.loads(seen[0].content)
    assert (body["amount"], body["currency"]) == (minor, sent_currency)


async def test_an_amount_the_currency_cannot_express_is_not_sent() -> None:
    seen: list[httpx.Request] = []
    result = await gateway(lambda _: httpx.Response(200, json={"id": "ch_1"}), seen).charge(charge("10.50", "JPY"))
    assert result.failure_code is FailureCode.UNKNOWN and seen == []


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        (
            {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Not enough"},
            "INSUFFICIENT_FUNDS",
            "Not enough",
        ),
        ({"code": "expired_card", "message": "Card expired"}, "CARD_EXPIRED", "Card expired"),
        ({"code": "incorrect_number"}, "INVALID_CARD", "Invalid card"),
        ({"code": "card_declined", "decline_code": "invalid_number"}, "INVALID_CARD", "Invalid card"),
        (
            {"code": "card_declined", "decline_code": "fraudulent", "message": "Fraud suspected"},
            "FRAUD_SUSPECTED",
            "Fraud suspected",
        ),
        (
            {"code": "card_declined", "decline_code": "generic_decline", "message": "Card declined"},
            "CARD_DECLINED",
            "Card declined",
        ),
        ({"code": "expired_card", "decline_code": "do_not_honor"}, "CARD_DECLINED", "Card declined"),
        ({}, "CARD_DECLINED", "Card declined"),
    ],
)
async def test_402_maps_by_decline_code_else_code(fields: dict[str, str], code: str, reason: str) -> None:
    result = await gateway(error(402, type="card_error", **fields)).charge(charge())
    assert (result.success, result.failure_code, result.failure_reason) == (False, FailureCode(code), reason)


@pytest.mark.parametrize(
    ("status", "code"), [(409, "idempotency_key_in_use"), (429, "rate_limit"), (500, ""), (503, "")]
)
async def test_busy_or_broken_gateway_is_transient(status: int, code: str) -> None:
    with pytest.raises(GatewayTransientError):
        await gateway(error(status, code=code)).charge(charge())
    with pytest.raises(GatewayTransientError):
        await gateway(error(status, code=code)).refund(refund())


async def test_a_success_without_an_id_or_a_body_is_transient() -> None:
    with pytest.raises(GatewayTransientError):
        await gateway(lambda _: httpx.Response(200, text="<html>proxy</html>")).charge(charge())


async def test_connection_errors_are_transient_and_timeouts_are_timeouts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(GatewayTransientError):
        await gateway(refuse).charge(charge())
    with pytest.raises(TimeoutError):
        await gateway(stall).charge(charge())


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_make_the_gateway_unusable(status: int) -> None:
    with pytest.raises(GatewayUnusableError):
        await gateway(error(status, type="authentication_error")).charge(charge())
    with pytest.raises(GatewayUnusableError):
        await gateway(error(status, type="authentication_error")).refund(refund())


async def test_other_4xx_fails_unknown_and_is_logged_as_an_error() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["level"].name), level="ERROR")
    try:
        result = await gateway(error(400, type="invalid_request_error", code="parameter_missing")).charge(charge())
    finally:
        logger.remove(sink)
    assert (result.failure_code, result.failure_reason) == (FailureCode.UNKNOWN, "Payment failed")
    assert lines == ["ERROR"]


async def test_refund_request_shape_and_answers() -> None:
    seen: list[httpx.Request] = []
    done = await gateway(lambda _: httpx.Response(200, json={"id": "re_1", "status": "succeeded"}), seen).refund(
        refund()
    )
    assert done == RefundResult(True, "re_1", None)
    assert str(seen[0].url) == "https://gateway.test/v1/refunds"
    assert seen[0].headers["idempotency-key"] == "refund-order-12345"
    assert json.loads(seen[0].content) == {
        "charge": "ch_1",
        "reason": "requested_by_customer",
        "metadata": {"orderId": "12345"},
    }
    already = await gateway(error(400, code="charge_already_refunded")).refund(refund())
    assert already.success
    declined = await gateway(error(402, code="refund_declined", message="Refund declined")).refund(refund())
    assert declined == RefundResult(False, None, "Refund declined")
    missing = await gateway(error(404, code="resource_missing")).refund(refund())
    assert not missing.success


async def test_the_api_key_is_in_no_repr() -> None:
    http = gateway(lambda _: httpx.Response(200, json={"id": "ch_1"}))
    assert KEY not in repr(http) and KEY not in str(vars(http))
    await http.aclose()


def test_gateway_from_settings() -> None:
    simulated = gateway_from(load_settings(payment_delay_ms=7, payment_always_succeed=True))
    assert isinstance(simulated, SimulatedGateway) and simulated.always_succeed and simulated.delay == 0.007
    http = gateway_from(
        load_settings(payment_gateway="http", payment_gateway_url="http://127.0.0.1:8090", payment_gateway_api_key=KEY)
    )
    assert isinstance(http, HttpGateway) and http.base_url == "http://127.0.0.1:8090"
