"""Wire shapes: published bodies have exactly the documented keys; consumed schemas state the tolerant rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.domain import CardBrand, FailureCode, Payment, PaymentMethod, PaymentMethodType, PaymentStatus
from app.messaging.events import (
    OrderCancelledEvent,
    OrderPaymentFailedEvent,
    OrderPaymentSucceededEvent,
    OrderStockConfirmedEvent,
    PaymentRefundedEvent,
    outcome_event,
)

SUCCEEDED_KEYS = ["eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"]
FAILED_KEYS = ["eventId", "orderId", "failureReason", "failureCode", "occurredAt"]
REFUNDED_KEYS = [
    "eventId",
    "orderId",
    "paymentId",
    "transactionId",
    "refundId",
    "amount",
    "currency",
    "reason",
    "refundedAt",
]


def payment(status: PaymentStatus, **kw: object) -> Payment:
    fields: dict[str, object] = {
        "id": 17,
        "order_id": 12345,
        "buyer_id": "user-uuid-123",
        "amount": Decimal("49.9"),
        "currency": "USD",
        "status": status,
        "payment_method": PaymentMethod(PaymentMethodType.CREDIT_CARD, "4242", CardBrand.VISA),
        "created_at": datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        "processed_at": datetime(2024, 1, 15, 10, 30, 1, 120000, tzinfo=UTC),
    }
    return Payment(**{**fields, **kw})  # type: ignore[arg-type]  # test data, typed by Payment itself


def refunded(**kw: object) -> Payment:
    refund: dict[str, object] = {
        "transaction_id": "txn_abc",
        "refund_id": "re_123",
        "refund_reason": "Customer changed their mind",
        "refunded_at": datetime(2024, 1, 15, 10, 31, 2, 4000, tzinfo=UTC),
        "cancelled_at": datetime(2024, 1, 15, 10, 31, tzinfo=UTC),
    }
    return payment(PaymentStatus.REFUNDED, **{**refund, **kw})


def test_succeeded_body_has_exactly_the_documented_keys() -> None:
    key, body, event_id = outcome_event(payment(PaymentStatus.SUCCEEDED, transaction_id="txn_abc"))
    assert key == "payment.succeeded"
    decoded = json.loads(body)
    assert list(decoded) == SUCCEEDED_KEYS
    assert decoded["amount"] == "49.90"
    assert decoded["processedAt"] == "2024-01-15T10:30:01.120Z"
    assert (decoded["paymentId"], decoded["orderId"], decoded["transactionId"]) == (17, 12345, "txn_abc")
    assert decoded["eventId"] == str(event_id)


def test_failed_body_has_exactly_the_documented_keys_and_a_stable_event_id() -> None:
    failed = payment(PaymentStatus.FAILED, failure_reason="Card declined", failure_code=FailureCode.CARD_DECLINED)
    key, body, event_id = outcome_event(failed)
    assert key == "payment.failed"
    decoded = json.loads(body)
    assert list(decoded) == FAILED_KEYS
    assert (decoded["failureCode"], decoded["failureReason"]) == ("CARD_DECLINED", "Card declined")
    assert decoded["occurredAt"] == "2024-01-15T10:30:01.120Z"
    assert outcome_event(failed) == (key, body, event_id)  # a re-publication is byte-for-byte the same


def test_a_rejected_order_without_amount_or_currency_still_fails_publicly() -> None:
    failed = payment(
        PaymentStatus.FAILED,
        amount=None,
        currency=None,
        payment_method=None,
        failure_reason="Invalid totalAmount",
        failure_code=FailureCode.UNKNOWN,
    )
    decoded = json.loads(outcome_event(failed)[1])
    assert list(decoded) == FAILED_KEYS
    assert (decoded["failureCode"], decoded["failureReason"]) == ("UNKNOWN", "Invalid totalAmount")


def test_refunded_body_has_exactly_the_documented_keys() -> None:
    key, body, event_id = outcome_event(refunded())
    assert key == "payment.refunded"
    decoded = json.loads(body)
    assert list(decoded) == REFUNDED_KEYS
    assert decoded == {
        "eventId": str(event_id),
        "orderId": 12345,
        "paymentId": 17,
        "transactionId": "txn_abc",
        "refundId": "re_123",
        "amount": "49.90",
        "currency": "USD",
        "reason": "Customer changed their mind",
        "refundedAt": "2024-01-15T10:31:02.004Z",
    }
    assert outcome_event(refunded()) == (key, body, event_id)


def test_a_refund_without_a_reason_says_refunded() -> None:
    decoded = json.loads(outcome_event(refunded(refund_reason=None, cancelled_at=None))[1])
    assert decoded["reason"] == "Refunded"


def test_each_outcome_of_a_payment_has_its_own_stable_event_id() -> None:
    ids = {
        outcome_event(payment(PaymentStatus.SUCCEEDED, transaction_id="t"))[2],
        outcome_event(payment(PaymentStatus.FAILED, failure_code=FailureCode.UNKNOWN))[2],
        outcome_event(refunded())[2],
        outcome_event(payment(PaymentStatus.SUCCEEDED, id=18, transaction_id="t"))[2],
    }
    assert len(ids) == 4
    assert outcome_event(payment(PaymentStatus.SUCCEEDED, transaction_id="other"))[2] in ids


@pytest.mark.parametrize(
    "unannounced",
    [
        payment(PaymentStatus.PROCESSING),
        payment(PaymentStatus.PENDING),
        payment(PaymentStatus.CANCELLED, amount=None),
        # charged, then the order was cancelled: never payment.succeeded (the refund is announced instead)
        payment(PaymentStatus.SUCCEEDED, transaction_id="t", cancelled_at=datetime(2024, 1, 15, tzinfo=UTC)),
    ],
)
def test_payments_with_nothing_to_announce_have_no_outcome_event(unannounced: Payment) -> None:
    with pytest.raises(ValueError, match="no outcome to announce"):
        outcome_event(unannounced)


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        (OrderPaymentSucceededEvent, SUCCEEDED_KEYS),
        (OrderPaymentFailedEvent, FAILED_KEYS),
        (PaymentRefundedEvent, REFUNDED_KEYS),
    ],
)
def test_published_schemas_require_exactly_their_keys(model: type, keys: list[str]) -> None:
    schema = model.model_json_schema()  # type: ignore[attr-defined]  # a pydantic model
    assert list(schema["properties"]) == keys
    assert schema["required"] == keys
    assert schema["additionalProperties"] is False


def test_failure_codes_are_the_order_services_enum() -> None:
    schema = OrderPaymentFailedEvent.model_json_schema()
    assert set(schema["$defs"]["FailureCode"]["enum"]) == {
        "INSUFFICIENT_FUNDS",
        "CARD_DECLINED",
        "CARD_EXPIRED",
        "INVALID_CARD",
        "FRAUD_SUSPECTED",
        "GATEWAY_ERROR",
        "TIMEOUT",
        "UNKNOWN",
    }


def test_consumed_stock_confirmed_schema_states_the_tolerant_rules() -> None:
    schema = OrderStockConfirmedEvent.model_json_schema()
    properties = schema["properties"]
    assert set(properties) == {
        "eventId",
        "orderId",
        "buyerId",
        "totalAmount",
        "currency",
        "paymentMethod",
        "occurredAt",
    }
    assert schema.get("additionalProperties") is not False  # unknown keys are ignored
    assert {"type": "string", "pattern": "^[0-9]+$"} in properties["orderId"]["anyOf"]
    assert properties["currency"]["pattern"] == "^[A-Za-z]{3}$"
    assert {"type": "number"} in properties["totalAmount"]["anyOf"]
    assert "eventId" not in schema["required"]
    assert "occurredAt" not in schema["required"]
    method = schema["$defs"]["PaymentMethodPayload"]
    assert method["required"] == ["type"]
    assert method["properties"]["cardLastFour"]["maxLength"] == 4


def test_consumed_order_cancelled_schema_requires_only_the_order_id() -> None:
    schema = OrderCancelledEvent.model_json_schema()
    assert list(schema["properties"]) == ["orderId", "buyerId", "reason", "cancelledAt"]
    assert schema["required"] == ["orderId"]
