"""The `payments` table as a SQLModel model: the one definition of the row schema.

The Alembic revisions must produce exactly this table, from an empty database and from the
Kotlin service's database alike; tests/integration/test_migrations.py holds them to it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

STATUSES = ("PENDING", "PROCESSING", "SUCCEEDED", "FAILED", "REFUNDED", "CANCELLED")
_STATUS_LIST = ", ".join(f"'{status}'" for status in STATUSES)


def _timestamp(*, nullable: bool = True, now_by_default: bool = False) -> sa.Column:
    return sa.Column(
        sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if now_by_default else None
    )


class PaymentRow(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("order_id", name="uq_payments_order_id"),
        sa.CheckConstraint(f"status IN ({_STATUS_LIST})", name="ck_payments_status"),
        # NULL passes: a FAILED row for an event without a usable amount, a CANCELLED row.
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
        sa.Index("ix_payments_buyer_id_created_at", "buyer_id", "created_at"),
        sa.Index("ix_payments_status_created_at", "status", "created_at"),
        # The reconciler's sweeps: unfinished payments, unannounced outcomes, owed refunds.
        sa.Index(
            "ix_payments_unfinished_lease",
            "lease_until",
            postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"),
        ),
        sa.Index(
            "ix_payments_unpublished",
            "processed_at",
            postgresql_where=sa.text("published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED', 'REFUNDED')"),
        ),
        sa.Index(
            "ix_payments_refund_owed",
            "refund_requested_at",
            postgresql_where=sa.text("refund_requested_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    order_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    buyer_id: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    amount: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric(12, 2)))
    currency: str | None = Field(default=None, sa_column=sa.Column(sa.String(3)))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    payment_method_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    card_last_four: str | None = Field(default=None, sa_column=sa.Column(sa.String(4)))
    card_brand: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    card_holder_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    expiration_month: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    expiration_year: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    transaction_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    failure_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    failure_code: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    event_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    created_at: datetime = Field(sa_column=_timestamp(nullable=False, now_by_default=True))
    updated_at: datetime = Field(sa_column=_timestamp(nullable=False, now_by_default=True))
    processed_at: datetime | None = Field(default=None, sa_column=_timestamp())
    # The worker holding the payment (a charge or a refund in progress) and until when.
    lease_owner: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid))
    lease_until: datetime | None = Field(default=None, sa_column=_timestamp())
    published_at: datetime | None = Field(default=None, sa_column=_timestamp())
    cancelled_at: datetime | None = Field(default=None, sa_column=_timestamp())
    refund_reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    # A refund is owed while this is set on a SUCCEEDED payment.
    refund_requested_at: datetime | None = Field(default=None, sa_column=_timestamp())
    refund_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    refunded_at: datetime | None = Field(default=None, sa_column=_timestamp())
