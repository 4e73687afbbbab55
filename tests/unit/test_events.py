"""Wire shapes: the contract's examples decode; published bodies have exactly its keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from app.domain import CardBrand, FailureCode, Payment, PaymentMethod, PaymentMethodType, PaymentStatus
from app.messaging.events import OrderStockConfirmedEvent, outcome_event
from app.messaging.legacy import describe_validation_error

CONTRACT_EXAMPLE = """{
  "eventId": "6f1c0c5e-1111-2222-3333-444455556666",
  "orderId": 12345,
  "buyerId": "user-uuid-123",
  "totalAmount": "49.99",
  "currency": "USD",
  "paymentMethod": {
    "type": "CREDIT_CARD",
    "cardLastFour": "4242",
    "cardBrand": "VISA",
    "cardHolderName": "John Doe",
    "expirationMonth": 12,
    "expirationYear": 2025
  },
  "occurredAt": "2024-01-15T10:30:00Z"
}"""


def example(**changes) -> dict:  # noqa: ANN003
    body = json.loads(CONTRACT_EXAMPLE)
    for key, value in changes.items():
        if key.startswith("pm_"):
            body["paymentMethod"][key[3:]] = value
        else:
            body[key] = value
    return body


def test_contract_example_decodes() -> None:
    event = OrderStockConfirmedEvent.model_validate_json(CONTRACT_EXAMPLE)
    assert event.order_id == 12345
    assert event.total_amount == Decimal("49.99")
    assert event.payment_method.card_brand is CardBrand.VISA
    assert event.occurred_at == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {"totalAmount": 49.99},
        {"totalAmount": 100},
        {"occurredAt": "2026-01-17T23:54:00.123456789Z"},
        {"pm_cardLastFour": None, "pm_cardBrand": None, "pm_cardHolderName": None},
        {"pm_expirationMonth": None, "pm_expirationYear": None},
        {"unknownKey": {"nested": True}},
        {"pm_type": "BANK_TRANSFER", "pm_cardBrand": "UNKNOWN"},
    ],
)
def test_tolerated_variants(changes: dict) -> None:
    OrderStockConfirmedEvent.model_validate_json(json.dumps(example(**changes)))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"orderId": 0}, "orderId"),
        ({"orderId": -1}, "orderId"),
        ({"orderId": 2**63}, "orderId"),
        ({"orderId": "12345"}, "orderId"),
        ({"totalAmount": "0"}, "totalAmount"),
        ({"totalAmount": "-1.00"}, "totalAmount"),
        ({"totalAmount": "1.234"}, "totalAmount"),
        ({"totalAmount": "10000000000.00"}, "totalAmount"),
        ({"totalAmount": "abc"}, "totalAmount"),
        ({"totalAmount": True}, "totalAmount"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"pm_cardLastFour": "42"}, "paymentMethod.cardLastFour"),
        ({"pm_cardLastFour": "42a4"}, "paymentMethod.cardLastFour"),
        ({"pm_expirationMonth": 13}, "paymentMethod.expirationMonth"),
        ({"pm_expirationMonth": 0}, "paymentMethod.expirationMonth"),
        ({"pm_type": "CASH"}, "paymentMethod.type"),
        ({"eventId": ""}, "eventId"),
        ({"buyerId": "x" * 256}, "buyerId"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        OrderStockConfirmedEvent.model_validate_json(json.dumps(example(**changes)))
    problem = describe_validation_error(raised.value)
    assert problem.reason.startswith(field + ":"), problem.reason
    assert problem.category == "invalid_value"


def test_missing_field_and_non_json_have_categories() -> None:
    body = example()
    del body["buyerId"]
    with pytest.raises(ValidationError) as raised:
        OrderStockConfirmedEvent.model_validate_json(json.dumps(body))
    assert describe_validation_error(raised.value).category == "missing_field"
    with pytest.raises(ValidationError) as raised:
        OrderStockConfirmedEvent.model_validate_json(b"not json")
    assert describe_validation_error(raised.value).category == "invalid_json"
    with pytest.raises(ValidationError) as raised:
        OrderStockConfirmedEvent.model_validate_json(b"[1, 2]")
    assert describe_validation_error(raised.value).category == "not_an_object"


def payment(status: PaymentStatus, **kw) -> Payment:  # noqa: ANN003
    return Payment(
        id=17,
        order_id=12345,
        buyer_id="user-uuid-123",
        amount=Decimal("49.9"),
        currency="USD",
        status=status,
        payment_method=PaymentMethod(PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA),
        created_at=datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        processed_at=datetime(2024, 1, 15, 10, 30, 1, 120000, tzinfo=UTC),
        **kw,
    )


def test_succeeded_body_has_exactly_the_contract_keys() -> None:
    key, body, event_id = outcome_event(payment(PaymentStatus.SUCCEEDED, transaction_id="txn_abc"))
    assert key == "payment.succeeded"
    decoded = json.loads(body)
    assert list(decoded) == ["eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"]
    assert decoded["amount"] == "49.90"
    assert decoded["processedAt"] == "2024-01-15T10:30:01.120Z"
    assert decoded["paymentId"] == 17 and decoded["orderId"] == 12345
    assert decoded["eventId"] == str(event_id)


def test_failed_body_has_exactly_the_contract_keys_and_stable_event_id() -> None:
    failed = payment(PaymentStatus.FAILED, failure_reason="Card declined", failure_code=FailureCode.CARD_DECLINED)
    key, body, event_id = outcome_event(failed)
    assert key == "payment.failed"
    decoded = json.loads(body)
    assert list(decoded) == ["eventId", "orderId", "failureReason", "failureCode", "occurredAt"]
    assert decoded["failureCode"] == "CARD_DECLINED"
    assert decoded["occurredAt"].endswith("Z")
    assert outcome_event(failed)[1] == body  # a replay is byte-for-byte the same


def test_unfinished_payment_has_no_outcome_event() -> None:
    with pytest.raises(ValueError):
        outcome_event(payment(PaymentStatus.PROCESSING))
