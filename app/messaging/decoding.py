"""Reading the consumed events: a tolerant reader under which every identifiable order gets an outcome.

Pure functions over the raw body (no framework): a message whose orderId can be read always
becomes a request (possibly carrying a `Rejection`, so it fails without a charge); only a body
without a readable orderId, or one too large to read, is `Unreadable` and parked.
docs/events.md states every rule applied here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from app.domain import (
    CardBrand,
    FailureCode,
    OrderCancellation,
    PaymentMethod,
    PaymentMethodType,
    PaymentRequest,
    Rejection,
)
from app.domain.money import currency_exponent, normalise_currency, parse_amount, to_minor_units
from app.messaging.json_body import Repeats, load_json

MAX_ORDER_ID = 2**63 - 1  # orderId is a Kotlin Long
MAX_TEXT = 255  # width of the buyer_id, event_id and card_holder_name columns
MAX_REASON = 500  # width of refund_reason
DEFAULT_CANCEL_REASON = "Order cancelled"
_INT32 = range(-(2**31), 2**31)  # expirationMonth/-Year are Kotlin Ints and INTEGER columns
_METHOD_TYPES = {member.value: member for member in PaymentMethodType}
_BRANDS = {member.value: member for member in CardBrand}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A message that names no order we can read (or is too large to read): it is parked."""

    reason: str  # short, never quotes the body
    category: str  # too_large, invalid_json, not_an_object, missing_order_id, invalid_order_id, duplicate_key


def decode_stock_confirmed(body: bytes, max_bytes: int) -> PaymentRequest | Unreadable:
    """An `order.stock-confirmed` body as a request; a rejection names the first unusable field."""
    read = _read_object(body, max_bytes)
    if isinstance(read, Unreadable):
        return read
    event, order_id, repeats = read
    problems: list[Rejection] = []
    if repeats:
        problems.append(_drop_repeats(event, repeats))
    buyer_id = _buyer_id(event.get("buyerId"), problems)
    amount = _field(parse_amount, event.get("totalAmount"), "totalAmount", problems)
    currency = _field(normalise_currency, event.get("currency"), "currency", problems)
    # parse_amount leaves at most 2 places, so only currencies with fewer (JPY, ...) need the check.
    if amount is not None and currency is not None and currency_exponent(currency) < 2:
        try:
            to_minor_units(amount, currency)
        except ValueError:
            problems.append(Rejection(FailureCode.UNKNOWN, "Invalid totalAmount"))
    method = _payment_method(event.get("paymentMethod"), problems)
    return PaymentRequest(
        event_id=_event_id(event.get("eventId")),
        order_id=order_id,
        buyer_id=buyer_id,
        amount=amount,
        currency=currency,
        payment_method=method,
        occurred_at=_instant(event.get("occurredAt")),
        rejection=problems[0] if problems else None,
    )


def decode_order_cancelled(body: bytes, max_bytes: int) -> OrderCancellation | Unreadable:
    """An `order.cancelled` body: only orderId is required; a repeated key other than orderId
    counts with its last value (nothing is charged on a cancellation, so nothing is ambiguous)."""
    read = _read_object(body, max_bytes)
    if isinstance(read, Unreadable):
        return read
    event, order_id, _ = read
    reason = event.get("reason")
    buyer_id = event.get("buyerId")
    return OrderCancellation(
        order_id=order_id,
        buyer_id=_clean_text(buyer_id, MAX_TEXT) if isinstance(buyer_id, str) and buyer_id else None,
        reason=_clean_text(reason, MAX_REASON) if isinstance(reason, str) and reason.strip() else DEFAULT_CANCEL_REASON,
        cancelled_at=_instant(event.get("cancelledAt")),
    )


# --- the envelope: size, JSON, object, orderId -------------------------------------------------

_NOT_JSON = Unreadable("Body is not valid JSON", "invalid_json")


def _read_object(body: bytes, max_bytes: int) -> tuple[dict[str, Any], int, Repeats] | Unreadable:
    if len(body) > max_bytes:
        return Unreadable(f"Body larger than {max_bytes} bytes", "too_large")
    loaded = load_json(body)
    if loaded is None:
        return _NOT_JSON
    event, repeats = loaded
    if not isinstance(event, dict):
        return Unreadable("Body is not a JSON object", "not_an_object")
    if any(obj is event and "orderId" in keys for obj, keys in repeats):
        return Unreadable("Duplicate key orderId", "duplicate_key")
    if "orderId" not in event:
        return Unreadable("Missing orderId", "missing_order_id")
    order_id = _order_id(event["orderId"])
    if order_id is None:
        return Unreadable("Invalid orderId", "invalid_order_id")
    return event, order_id, repeats


def _order_id(raw: object) -> int | None:
    """A positive 64-bit integer, as a JSON integer or a string of ASCII digits."""
    if isinstance(raw, str) and 0 < len(raw) <= 40 and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if type(raw) is int and 0 < raw <= MAX_ORDER_ID:  # type(): a JSON true/false (bool) is no id
        return raw
    return None


def _drop_repeats(event: dict[str, Any], repeats: Repeats) -> Rejection:
    """A key given twice has no agreed value: it is read as absent, and the order is rejected."""
    for obj, keys in repeats:
        for key in keys:
            obj.pop(key, None)
    obj, keys = repeats[0]
    # Key names come from the sender: the reason keeps a storable, bounded copy.
    return Rejection(FailureCode.UNKNOWN, "Duplicate key " + _clean_text(f"{_path_to(event, obj)}{keys[0]}", 100))


def _path_to(root: dict[str, Any], target: dict[str, Any]) -> str:
    """The dotted path ("paymentMethod.") of a nested object, found without recursion."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, dict):
            stack.extend((value, f"{path}{key}.") for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{path}{index}.") for index, value in enumerate(node))
    return ""


# --- the fields ---------------------------------------------------------------------------------


def _field(parse: Any, raw: object, name: str, problems: list[Rejection]) -> Any:
    """`parse(raw)`, or None with a rejection naming the field (never quoting the value)."""
    if raw is None:
        problems.append(Rejection(FailureCode.UNKNOWN, f"Missing {name}"))
        return None
    try:
        return parse(raw)
    except ValueError:
        problems.append(Rejection(FailureCode.UNKNOWN, f"Invalid {name}"))
        return None


def _buyer_id(raw: object, problems: list[Rejection]) -> str:
    if _storable(raw) and 0 < len(raw) <= MAX_TEXT:
        return raw
    missing = raw is None or raw == ""
    problems.append(Rejection(FailureCode.UNKNOWN, "Missing buyerId" if missing else "Invalid buyerId"))
    return ""


def _payment_method(raw: object, problems: list[Rejection]) -> PaymentMethod | None:
    """Card problems reject with INVALID_CARD; optional card details are tolerated where harmless."""
    if not isinstance(raw, dict):
        problems.append(Rejection(FailureCode.INVALID_CARD, f"{'Missing' if raw is None else 'Invalid'} paymentMethod"))
        return None
    kind = raw.get("type")
    method_type = _METHOD_TYPES.get(kind) if isinstance(kind, str) else None
    if method_type is None:
        problems.append(
            Rejection(FailureCode.INVALID_CARD, f"{'Missing' if kind is None else 'Invalid'} paymentMethod.type")
        )
        return None
    holder = raw.get("cardHolderName")
    return PaymentMethod(
        type=method_type,
        card_last_four=_last_four(raw.get("cardLastFour"), problems),
        card_brand=_brand(raw.get("cardBrand")),
        card_holder_name=_clean_text(holder, MAX_TEXT) if isinstance(holder, str) else None,
        expiration_month=_card_int(raw.get("expirationMonth"), range(1, 13), "expirationMonth", problems),
        expiration_year=_card_int(raw.get("expirationYear"), _INT32, "expirationYear", problems),
    )


def _last_four(raw: object, problems: list[Rejection]) -> str | None:
    """Any string of at most 4 characters (the order service keeps the last four typed)."""
    if raw is None or (_storable(raw) and len(raw) <= 4):
        return raw
    problems.append(Rejection(FailureCode.INVALID_CARD, "Invalid paymentMethod.cardLastFour"))
    return None


def _brand(raw: object) -> CardBrand | None:
    # An unknown brand is still a brand: kept as UNKNOWN, since no charge depends on it.
    if raw is None:
        return None
    return _BRANDS.get(raw, CardBrand.UNKNOWN) if isinstance(raw, str) else CardBrand.UNKNOWN


def _card_int(raw: object, allowed: range, name: str, problems: list[Rejection]) -> int | None:
    if raw is None:
        return None
    if type(raw) is int and raw in allowed:  # type(): a JSON true/false (bool) is no number
        return raw
    problems.append(Rejection(FailureCode.INVALID_CARD, f"Invalid paymentMethod.{name}"))
    return None


def _event_id(raw: object) -> str:
    """The sender's eventId, or a generated one when it is missing or cannot be stored."""
    if _storable(raw) and 0 < len(raw) <= MAX_TEXT:
        return raw
    return str(uuid.uuid4())


def _instant(raw: object) -> datetime | None:
    """An ISO-8601 instant with Z or an offset (fraction up to nanoseconds), in UTC; else None."""
    if not isinstance(raw, str):
        return None
    try:
        # Python 3.11+ reads ISO-8601 with Z and fractions of up to 9 digits (Kotlin's Instant).
        parsed = datetime.fromisoformat(raw.upper())  # RFC 3339 allows a lower-case t and z
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None  # no offset: unknown zone
    except (ValueError, OverflowError):  # e.g. 2024-02-30, or year 1 with a positive offset
        return None


def _storable(raw: object) -> TypeGuard[str]:
    """A str PostgreSQL can store as it is: no NUL and no lone surrogate (JSON allows both)."""
    if not isinstance(raw, str):
        return False
    if raw.isascii():
        return "\x00" not in raw
    try:
        raw.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in raw


def _clean_text(raw: str, limit: int) -> str:
    """Free text made storable (NUL dropped, lone surrogates replaced) and cut to the column width."""
    if not _storable(raw):
        raw = raw.replace("\x00", "").encode("utf-8", "replace").decode()
    return raw[:limit]
