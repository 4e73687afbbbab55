"""The tolerant reader: every identifiable order becomes a request (maybe rejected); the rest is parked."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import CardBrand, FailureCode, OrderCancellation, PaymentMethodType, PaymentRequest
from app.messaging.decoding import Unreadable, decode_order_cancelled, decode_stock_confirmed

MAX = 262_144
ABSENT = object()  # marks a key to delete from the example

EXAMPLE: dict[str, Any] = {
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
        "expirationYear": 2025,
    },
    "occurredAt": "2024-01-15T10:30:00Z",
}


def body(**changes: object) -> bytes:
    """The example with changes; `pm_x` changes paymentMethod.x; ABSENT deletes a key."""
    event = json.loads(json.dumps(EXAMPLE))
    for key, value in sorted(changes.items(), key=lambda item: not item[0].startswith("pm_")):  # pm_ first
        target, name = (event["paymentMethod"], key[3:]) if key.startswith("pm_") else (event, key)
        if value is ABSENT:
            del target[name]
        else:
            target[name] = value
    return json.dumps(event).encode()


def request(raw: bytes) -> PaymentRequest:
    decoded = decode_stock_confirmed(raw, MAX)
    assert isinstance(decoded, PaymentRequest), decoded
    return decoded


def test_the_example_reads_completely() -> None:
    decoded = request(body())
    assert decoded.rejection is None
    assert (decoded.event_id, decoded.order_id, decoded.buyer_id) == (EXAMPLE["eventId"], 12345, "user-uuid-123")
    assert (decoded.amount, decoded.currency) == (Decimal("49.99"), "USD")
    method = decoded.payment_method
    assert method is not None
    assert method.type is PaymentMethodType.CREDIT_CARD
    assert method.card_brand is CardBrand.VISA
    assert (method.card_last_four, method.card_holder_name) == ("4242", "John Doe")
    assert (method.expiration_month, method.expiration_year) == (12, 2025)
    assert decoded.occurred_at == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"orderId": "123"}, lambda r: r.order_id == 123),
        ({"orderId": 2**63 - 1}, lambda r: r.order_id == 2**63 - 1),
        ({"currency": "usd"}, lambda r: r.currency == "USD"),
        ({"currency": "Jpy", "totalAmount": "10"}, lambda r: (r.currency, r.amount) == ("JPY", Decimal(10))),
        ({"totalAmount": "49.990"}, lambda r: r.amount == Decimal("49.99")),
        ({"totalAmount": 49.99}, lambda r: r.amount == Decimal("49.99")),
        ({"totalAmount": 100}, lambda r: r.amount == Decimal(100)),
        ({"pm_cardLastFour": "1111"}, lambda r: r.payment_method.card_last_four == "1111"),  # 4111 ... 1111
        ({"pm_cardLastFour": "12ab"}, lambda r: r.payment_method.card_last_four == "12ab"),
        ({"pm_cardLastFour": "42"}, lambda r: r.payment_method.card_last_four == "42"),
        ({"pm_cardLastFour": ""}, lambda r: r.payment_method.card_last_four == ""),
        ({"pm_cardLastFour": None}, lambda r: r.payment_method.card_last_four is None),
        ({"pm_cardBrand": "JCB"}, lambda r: r.payment_method.card_brand is CardBrand.UNKNOWN),
        ({"pm_cardBrand": 7}, lambda r: r.payment_method.card_brand is CardBrand.UNKNOWN),
        ({"pm_cardBrand": None}, lambda r: r.payment_method.card_brand is None),
        ({"pm_cardBrand": ABSENT, "pm_cardHolderName": ABSENT}, lambda r: r.payment_method.card_holder_name is None),
        ({"pm_cardHolderName": "x" * 300}, lambda r: r.payment_method.card_holder_name == "x" * 255),
        ({"pm_cardHolderName": "J\u0000D"}, lambda r: r.payment_method.card_holder_name == "JD"),
        ({"pm_expirationMonth": None}, lambda r: r.payment_method.expiration_month is None),
        ({"pm_expirationMonth": ABSENT}, lambda r: r.payment_method.expiration_month is None),
        ({"pm_expirationYear": 1}, lambda r: r.payment_method.expiration_year == 1),
        ({"pm_expirationYear": -5}, lambda r: r.payment_method.expiration_year == -5),
        ({"pm_expirationYear": 99999}, lambda r: r.payment_method.expiration_year == 99999),
        (
            {"pm_type": "BANK_TRANSFER", "pm_cardLastFour": None},
            lambda r: r.payment_method.type.value == "BANK_TRANSFER",
        ),
        ({"unknownKey": {"nested": [1, 2]}}, lambda r: r.rejection is None),
        ({"pm_unknownKey": True}, lambda r: r.rejection is None),
        ({"eventId": ABSENT}, lambda r: uuid.UUID(r.event_id).version == 4),
        ({"eventId": ""}, lambda r: uuid.UUID(r.event_id).version == 4),
        ({"eventId": 42}, lambda r: uuid.UUID(r.event_id).version == 4),
        ({"eventId": "e" * 256}, lambda r: uuid.UUID(r.event_id).version == 4),
        ({"occurredAt": "2026-01-17T23:54:00.123456789Z"}, lambda r: r.occurred_at.microsecond == 123456),
        (
            {"occurredAt": "2024-01-15T11:30:00+01:00"},
            lambda r: r.occurred_at == datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        ),
        ({"occurredAt": "2024-01-15t10:30:00.5z"}, lambda r: r.occurred_at.microsecond == 500000),
        ({"occurredAt": ABSENT}, lambda r: r.occurred_at is None),
        ({"occurredAt": "2024-01-15T10:30:00"}, lambda r: r.occurred_at is None),  # no offset: unknown
        ({"occurredAt": "2024-02-30T10:30:00Z"}, lambda r: r.occurred_at is None),
        ({"occurredAt": "yesterday"}, lambda r: r.occurred_at is None),
        ({"occurredAt": 1705314600}, lambda r: r.occurred_at is None),
        ({"occurredAt": "0001-01-01T00:00:00+01:00"}, lambda r: r.occurred_at is None),
    ],
)
def test_tolerated_variants_are_charged(changes: dict[str, object], check: Any) -> None:
    decoded = request(body(**changes))
    assert decoded.rejection is None
    assert check(decoded), decoded


UNKNOWN, INVALID_CARD = FailureCode.UNKNOWN, FailureCode.INVALID_CARD


@pytest.mark.parametrize(
    ("changes", "code", "reason"),
    [
        ({"totalAmount": ABSENT}, UNKNOWN, "Missing totalAmount"),
        ({"totalAmount": None}, UNKNOWN, "Missing totalAmount"),
        *[
            ({"totalAmount": bad}, UNKNOWN, "Invalid totalAmount")
            for bad in ["1e3", "1E+2", " 49.99", "1_000", "+5", "-1", "0", "49.999", "10000000000", "abc", True, [1]]
        ],
        ({"totalAmount": 1e3}, None, None),  # a JSON number is read by its value
        ({"totalAmount": "10.50", "currency": "JPY"}, UNKNOWN, "Invalid totalAmount"),
        ({"totalAmount": "1.234", "currency": "KWD"}, UNKNOWN, "Invalid totalAmount"),  # the 2-place rule wins
        ({"totalAmount": "1.23", "currency": "KWD"}, None, None),
        ({"currency": "XYZ"}, UNKNOWN, "Invalid currency"),
        ({"currency": "XAU"}, UNKNOWN, "Invalid currency"),  # no minor unit: not chargeable
        ({"currency": "US"}, UNKNOWN, "Invalid currency"),
        ({"currency": 840}, UNKNOWN, "Invalid currency"),
        ({"currency": ABSENT}, UNKNOWN, "Missing currency"),
        ({"buyerId": ABSENT}, UNKNOWN, "Missing buyerId"),
        ({"buyerId": ""}, UNKNOWN, "Missing buyerId"),
        ({"buyerId": 7}, UNKNOWN, "Invalid buyerId"),
        ({"buyerId": "b" * 256}, UNKNOWN, "Invalid buyerId"),
        ({"buyerId": "a\u0000b"}, UNKNOWN, "Invalid buyerId"),
        ({"paymentMethod": ABSENT}, INVALID_CARD, "Missing paymentMethod"),
        ({"paymentMethod": None}, INVALID_CARD, "Missing paymentMethod"),
        ({"paymentMethod": "CREDIT_CARD"}, INVALID_CARD, "Invalid paymentMethod"),
        ({"pm_type": ABSENT}, INVALID_CARD, "Missing paymentMethod.type"),
        ({"pm_type": "CASH"}, INVALID_CARD, "Invalid paymentMethod.type"),
        ({"pm_type": "credit_card"}, INVALID_CARD, "Invalid paymentMethod.type"),
        ({"pm_cardLastFour": "42424"}, INVALID_CARD, "Invalid paymentMethod.cardLastFour"),
        ({"pm_cardLastFour": "4111111111111111"}, INVALID_CARD, "Invalid paymentMethod.cardLastFour"),
        ({"pm_cardLastFour": 4242}, INVALID_CARD, "Invalid paymentMethod.cardLastFour"),
        ({"pm_expirationMonth": 13}, INVALID_CARD, "Invalid paymentMethod.expirationMonth"),
        ({"pm_expirationMonth": 0}, INVALID_CARD, "Invalid paymentMethod.expirationMonth"),
        ({"pm_expirationMonth": "12"}, INVALID_CARD, "Invalid paymentMethod.expirationMonth"),
        ({"pm_expirationYear": 2025.5}, INVALID_CARD, "Invalid paymentMethod.expirationYear"),
        ({"pm_expirationYear": 2**31}, INVALID_CARD, "Invalid paymentMethod.expirationYear"),
    ],
)
def test_unchargeable_values_reject_the_order_naming_the_field(
    changes: dict[str, object], code: FailureCode | None, reason: str | None
) -> None:
    decoded = request(body(**changes))
    if code is None:
        assert decoded.rejection is None
        return
    assert decoded.rejection is not None
    assert (decoded.rejection.code, decoded.rejection.reason) == (code, reason)
    assert decoded.order_id == 12345  # the order is identified, so it gets an outcome


def test_a_rejected_request_keeps_what_could_be_read() -> None:
    decoded = request(body(totalAmount="49.999", currency="usd"))
    assert decoded.amount is None
    assert decoded.currency == "USD"
    assert decoded.buyer_id == "user-uuid-123"
    assert decoded.payment_method is not None
    assert decoded.payment_method.card_last_four == "4242"
    decoded = request(body(totalAmount="10.50", currency="JPY", buyerId=ABSENT, paymentMethod=ABSENT))
    assert (decoded.amount, decoded.currency, decoded.buyer_id, decoded.payment_method) == (
        Decimal("10.50"),
        "JPY",
        "",
        None,
    )
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "Missing buyerId"
    decoded = request(body(pm_cardLastFour="12345"))
    assert decoded.payment_method is not None
    assert decoded.payment_method.card_last_four is None
    assert decoded.payment_method.type is PaymentMethodType.CREDIT_CARD


def test_reasons_never_quote_card_data_or_raw_values() -> None:
    for raw in (body(pm_cardLastFour="4111111111111111"), body(totalAmount="4111111111111111.999")):
        decoded = request(raw)
        assert decoded.rejection is not None
        assert "4111" not in decoded.rejection.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"orderId": 1, "totalAmount": "49.99", "totalAmount": "4.99"}', "Duplicate key totalAmount"),
        (
            b'{"orderId": 1, "paymentMethod": {"type": "CREDIT_CARD", "type": "DEBIT_CARD"}}',
            "Duplicate key paymentMethod.type",
        ),
        (b'{"orderId": 1, "extra": [{"a": 1, "a": 2}]}', "Duplicate key extra.0.a"),
        (b'{"orderId": 1, "a\\u0000": 1, "a\\u0000": 2}', "Duplicate key a"),  # a reason must be storable
    ],
)
def test_a_key_given_twice_rejects_the_order(raw: bytes, reason: str) -> None:
    decoded = request(raw)
    assert decoded.order_id == 1
    assert decoded.rejection is not None
    assert (decoded.rejection.code, decoded.rejection.reason) == (FailureCode.UNKNOWN, reason)


def test_a_repeated_field_is_read_as_absent() -> None:
    raw = body()[:-1] + b', "totalAmount": "4.99"}'
    decoded = request(raw)
    assert decoded.amount is None
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "Duplicate key totalAmount"


@pytest.mark.parametrize(
    ("raw", "category"),
    [
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"orderId": 1', "invalid_json"),
        (b'{"orderId": 1, "totalAmount": NaN}', "invalid_json"),
        (b'{"orderId": 1, "totalAmount": Infinity}', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"12345"', "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"buyerId": "u"}', "missing_order_id"),
        (body(orderId=ABSENT), "missing_order_id"),
        (body(orderId=0), "invalid_order_id"),
        (body(orderId=-1), "invalid_order_id"),
        (body(orderId=2**63), "invalid_order_id"),
        (body(orderId="12a"), "invalid_order_id"),
        (body(orderId=" 123"), "invalid_order_id"),
        (body(orderId="-5"), "invalid_order_id"),
        (body(orderId=""), "invalid_order_id"),
        (body(orderId=12345.0), "invalid_order_id"),
        (body(orderId=True), "invalid_order_id"),
        (body(orderId=None), "invalid_order_id"),
        (body(orderId="١٢٣"), "invalid_order_id"),  # non-ASCII digits
        (b'{"orderId": 1' + b"0" * 5000 + b"}", "invalid_order_id"),
        (b'{"orderId": 12345, "orderId": 12345}', "duplicate_key"),
        (b'{"orderId": 12345, "buyerId": "u", "orderId": 999}', "duplicate_key"),
    ],
)
def test_only_a_message_without_a_readable_order_id_is_unreadable(raw: bytes, category: str) -> None:
    decoded = decode_stock_confirmed(raw, MAX)
    assert isinstance(decoded, Unreadable), decoded
    assert decoded.category == category
    assert decoded.reason
    assert len(decoded.reason) < 100


def test_a_huge_amount_number_still_gives_the_order_an_outcome() -> None:
    decoded = request(body().replace(b'"49.99"', b"1" + b"0" * 5000))  # beyond Python's int-conversion limit
    assert decoded.rejection is not None
    assert decoded.rejection.reason == "Invalid totalAmount"


def test_a_body_over_the_limit_is_parked_unread() -> None:
    huge = b"{" + b" " * (10 * 1024 * 1024) + b"}"  # 10 MiB: not even valid JSON, and never parsed
    decoded = decode_stock_confirmed(huge, MAX)
    assert isinstance(decoded, Unreadable)
    assert decoded.category == "too_large"
    assert str(MAX) in decoded.reason
    exact = body()
    assert isinstance(decode_stock_confirmed(exact, len(exact)), PaymentRequest)
    assert isinstance(decode_stock_confirmed(exact, len(exact) - 1), Unreadable)


def test_a_utf8_bom_and_non_ascii_text_are_read() -> None:
    decoded = request("\ufeff".encode() + body(buyerId="usér-ü", pm_cardHolderName="Zoë Ölçer"))
    assert decoded.buyer_id == "usér-ü"
    assert decoded.payment_method.card_holder_name == "Zoë Ölçer"


CANCEL = {
    "orderId": 12345,
    "buyerId": "user-uuid-123",
    "reason": "Changed my mind",
    "cancelledAt": "2024-01-15T10:31:00Z",
}


def cancel(**changes: object) -> bytes:
    event = dict(CANCEL)
    for key, value in changes.items():
        if value is ABSENT:
            del event[key]
        else:
            event[key] = value
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            cancel(),
            OrderCancellation(12345, "user-uuid-123", "Changed my mind", datetime(2024, 1, 15, 10, 31, tzinfo=UTC)),
        ),
        (
            cancel(orderId="12345"),
            OrderCancellation(12345, "user-uuid-123", "Changed my mind", datetime(2024, 1, 15, 10, 31, tzinfo=UTC)),
        ),
        (
            cancel(reason=ABSENT, buyerId=ABSENT, cancelledAt=ABSENT),
            OrderCancellation(12345, None, "Order cancelled", None),
        ),
        (cancel(reason="", buyerId=5, cancelledAt="soon"), OrderCancellation(12345, None, "Order cancelled", None)),
        (
            cancel(reason="r" * 600),
            OrderCancellation(12345, "user-uuid-123", "r" * 500, datetime(2024, 1, 15, 10, 31, tzinfo=UTC)),
        ),
        (b'{"orderId": 9, "reason": "a", "reason": "b", "x": 1}', OrderCancellation(9, None, "b", None)),
    ],
)
def test_cancellations_are_read_tolerantly(raw: bytes, expected: OrderCancellation) -> None:
    assert decode_order_cancelled(raw, MAX) == expected


@pytest.mark.parametrize(
    ("raw", "category"),
    [
        (b"{", "invalid_json"),
        (b"[]", "not_an_object"),
        (cancel(orderId=ABSENT), "missing_order_id"),
        (cancel(orderId="x"), "invalid_order_id"),
        (b'{"orderId": 1, "orderId": 2}', "duplicate_key"),
        (b" " * (MAX + 1), "too_large"),
    ],
)
def test_unreadable_cancellations_are_parked(raw: bytes, category: str) -> None:
    decoded = decode_order_cancelled(raw, MAX)
    assert isinstance(decoded, Unreadable)
    assert decoded.category == category


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["eventId", "buyerId", "totalAmount", "currency", "paymentMethod", "occurredAt"]
PM_FIELDS = ["pm_" + key for key in EXAMPLE["paymentMethod"]]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + PM_FIELDS), json_values, max_size=5))
def test_any_values_beside_a_readable_order_id_give_a_request(changes: dict[str, object]) -> None:
    decoded = request(body(**changes))  # never raises, never parks
    assert decoded.order_id == 12345
    if decoded.rejection is None:  # a request without a rejection is fully chargeable
        assert decoded.amount is not None
        assert decoded.currency is not None
        assert decoded.payment_method is not None
        assert decoded.buyer_id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(decode_stock_confirmed(raw, MAX), (PaymentRequest, Unreadable))
    assert isinstance(decode_order_cancelled(raw, MAX), (OrderCancellation, Unreadable))
