"""create payments

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("order_id", sa.BigInteger, nullable=False),
        sa.Column("buyer_id", sa.String(255), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_method_type", sa.String(32), nullable=False),
        sa.Column("card_last_four", sa.String(4)),
        sa.Column("card_brand", sa.String(32)),
        sa.Column("card_holder_name", sa.String(255)),
        sa.Column("expiration_month", sa.Integer),
        sa.Column("expiration_year", sa.Integer),
        sa.Column("transaction_id", sa.String(255)),
        sa.Column("failure_reason", sa.String(500)),
        sa.Column("failure_code", sa.String(32)),
        sa.Column("event_id", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.Uuid),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("order_id", name="uq_payments_order_id"),
        sa.CheckConstraint(
            "status IN ('PENDING', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'REFUNDED')", name="ck_payments_status"
        ),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    )
    op.create_index("ix_payments_buyer_id_created_at", "payments", ["buyer_id", "created_at"])
    op.create_index("ix_payments_status_created_at", "payments", ["status", "created_at"])
    op.create_index(
        "ix_payments_unfinished_lease",
        "payments",
        ["lease_until"],
        postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"),
    )
    op.create_index(
        "ix_payments_unpublished",
        "payments",
        ["processed_at"],
        postgresql_where=sa.text("published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED')"),
    )


def downgrade() -> None:
    op.drop_table("payments")
