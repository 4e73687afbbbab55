"""Turning stored rows (asyncpg records or SQLModel rows) into domain payments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain import CardBrand, FailureCode, Payment, PaymentMethod, PaymentMethodType, PaymentStatus

COLUMNS = (
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
)


def payment_from_row(row: Mapping[str, Any]) -> Payment:
    brand = row["card_brand"]
    code = row["failure_code"]
    return Payment(
        id=row["id"],
        order_id=row["order_id"],
        buyer_id=row["buyer_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        payment_method=PaymentMethod(
            type=PaymentMethodType(row["payment_method_type"]),
            card_last_four=row["card_last_four"],
            card_brand=CardBrand(brand) if brand else None,
            card_holder_name=row["card_holder_name"],
            expiration_month=row["expiration_month"],
            expiration_year=row["expiration_year"],
        ),
        created_at=row["created_at"],
        transaction_id=row["transaction_id"],
        failure_reason=row["failure_reason"],
        failure_code=FailureCode(code) if code else None,
        processed_at=row["processed_at"],
        event_id=row["event_id"],
        lease_until=row["lease_until"],
        published_at=row["published_at"],
        updated_at=row["updated_at"],
    )
