"""The `payments` table as a SQLModel model: the schema the migrations create."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class PaymentRow(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        sa.Index("ix_payments_buyer_id_created_at", "buyer_id", "created_at"),
        sa.Index("ix_payments_status_created_at", "status", "created_at"),
        sa.Index(
            "ix_payments_unfinished_lease",
            "lease_until",
            postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"),
        ),
        sa.Index(
            "ix_payments_unpublished",
            "processed_at",
            postgresql_where=sa.text("published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    order_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, unique=True))
    buyer_id: str = Field(max_length=255)
    amount: Decimal = Field(sa_column=sa.Column(sa.Numeric(12, 2), nullable=False))
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    payment_method_type: str = Field(max_length=32)
    card_last_four: str | None = Field(default=None, max_length=4)
    card_brand: str | None = Field(default=None, max_length=32)
    card_holder_name: str | None = Field(default=None, max_length=255)
    expiration_month: int | None = None
    expiration_year: int | None = None
    transaction_id: str | None = Field(default=None, max_length=255)
    failure_reason: str | None = Field(default=None, max_length=500)
    failure_code: str | None = Field(default=None, max_length=32)
    event_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
    )
    updated_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
    )
    processed_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))
    lease_owner: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))
    published_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))
