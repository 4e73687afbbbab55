"""Turning stored rows (asyncpg records or SQLModel rows) into domain payments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain import CardBrand, FailureCode, Payment, PaymentMethod, PaymentMethodType, PaymentStatus

# The columns a payment is read from, in table order: every column of `tables.PaymentRow`
# except the lease token, which only the ledger's own statements compare and the domain never
# carries. Written out rather than read from the model so that the serving process never loads
# SQLAlchemy for its hot path; a unit test keeps this tuple equal to the model's columns.
INTERNAL_COLUMNS = frozenset({"lease_owner"})
COLUMNS: tuple[str, ...] = (
    "id",
    "order_id",
    "buyer_id",
    "amount",
    "currency",
    "status",
    "payment_method_type",
    "card_last_four",
    "card_brand",
    "card_holder_name",
    "expiration_month",
    "expiration_year",
    "transaction_id",
    "failure_reason",
    "failure_code",
    "event_id",
    "created_at",
    "updated_at",
    "processed_at",
    "lease_until",
    "published_at",
    "cancelled_at",
    "refund_reason",
    "refund_requested_at",
    "refund_id",
    "refunded_at",
)


def _payment_method(row: Mapping[str, Any]) -> PaymentMethod | None:
    kind = row["payment_method_type"]
    if kind is None:  # a FAILED row for an event without a usable method, or a CANCELLED row
        return None
    brand = row["card_brand"]
    return PaymentMethod(
        type=PaymentMethodType(kind),
        card_last_four=row["card_last_four"],
        card_brand=CardBrand(brand) if brand else None,
        card_holder_name=row["card_holder_name"],
        expiration_month=row["expiration_month"],
        expiration_year=row["expiration_year"],
    )


def payment_from_row(row: Mapping[str, Any]) -> Payment:
    code = row["failure_code"]
    return Payment(
        id=row["id"],
        order_id=row["order_id"],
        buyer_id=row["buyer_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        payment_method=_payment_method(row),
        created_at=row["created_at"],
        transaction_id=row["transaction_id"],
        failure_reason=row["failure_reason"],
        failure_code=FailureCode(code) if code else None,
        processed_at=row["processed_at"],
        event_id=row["event_id"],
        lease_until=row["lease_until"],
        published_at=row["published_at"],
        updated_at=row["updated_at"],
        cancelled_at=row["cancelled_at"],
        refund_reason=row["refund_reason"],
        refund_requested_at=row["refund_requested_at"],
        refund_id=row["refund_id"],
        refunded_at=row["refunded_at"],
    )
