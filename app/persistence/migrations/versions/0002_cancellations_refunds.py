"""cancellations and refunds: CANCELLED status, nullable charge fields, refund columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

- status allows CANCELLED (an order cancelled before it was charged) and is as wide as the
  Kotlin column (20); failure_reason is TEXT like the Kotlin column.
- amount, currency and payment_method_type may be NULL: a FAILED row for an event without a
  usable value, a CANCELLED row. CHECK (amount > 0) stays (NULL passes).
- cancelled_at, refund_reason, refund_requested_at, refund_id, refunded_at.
- the reconciler's indexes cover REFUNDED outcomes and owed refunds.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATUSES = "('PENDING', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'REFUNDED', 'CANCELLED')"
STATUSES_0001 = "('PENDING', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'REFUNDED')"
NULLABLE_NOW = ("amount", "currency", "payment_method_type")
UNPUBLISHED = "published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED', 'REFUNDED')"
UNPUBLISHED_0001 = "published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED')"


def _new_columns() -> list[sa.Column]:
    return [
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.Column("refund_reason", sa.String(500)),
        sa.Column("refund_requested_at", sa.DateTime(timezone=True)),
        sa.Column("refund_id", sa.String(255)),
        sa.Column("refunded_at", sa.DateTime(timezone=True)),
    ]


def upgrade() -> None:
    op.alter_column("payments", "status", type_=sa.String(20))
    op.alter_column("payments", "failure_reason", type_=sa.Text)
    _replace_status_rules(STATUSES, UNPUBLISHED)
    for name in NULLABLE_NOW:
        op.alter_column("payments", name, nullable=True)
    for column in _new_columns():
        op.add_column("payments", column)
    op.create_index(
        "ix_payments_refund_owed",
        "payments",
        ["refund_requested_at"],
        postgresql_where=sa.text("refund_requested_at IS NOT NULL"),
    )


def downgrade() -> None:
    _require_rows_fit_0001()
    op.drop_index("ix_payments_refund_owed", table_name="payments")
    for column in _new_columns():
        op.drop_column("payments", column.name)
    for name in NULLABLE_NOW:
        op.alter_column("payments", name, nullable=False)
    adopted = op.get_bind().execute(sa.text("SELECT to_regclass('flyway_schema_history') IS NOT NULL")).scalar_one()
    if not adopted:  # an adopted Kotlin table had these widths before 0002; ours did not
        op.alter_column("payments", "status", type_=sa.String(16))
        op.alter_column(
            "payments", "failure_reason", type_=sa.String(500), postgresql_using="left(failure_reason, 500)"
        )
    _replace_status_rules(STATUSES_0001, UNPUBLISHED_0001)


def _replace_status_rules(statuses: str, unpublished: str) -> None:
    """The check and the partial indexes on status, made anew after its type changed: PostgreSQL
    would keep them with casts from the old type, unlike the same definitions made afresh."""
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.create_check_constraint("ck_payments_status", "payments", f"status IN {statuses}")
    op.drop_index("ix_payments_unpublished", table_name="payments")
    op.create_index("ix_payments_unpublished", "payments", ["processed_at"], postgresql_where=sa.text(unpublished))
    op.drop_index("ix_payments_unfinished_lease", table_name="payments")
    op.create_index(
        "ix_payments_unfinished_lease",
        "payments",
        ["lease_until"],
        postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"),
    )


def _require_rows_fit_0001() -> None:
    """Before 0002 a row had an amount, a currency, a method and no CANCELLED status: say which
    rows stand in the way instead of failing on a constraint."""
    blocking = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM payments WHERE status = 'CANCELLED'"
                " OR amount IS NULL OR currency IS NULL OR payment_method_type IS NULL"
            )
        )
        .scalar_one()
    )
    if blocking:
        raise RuntimeError(
            f"{blocking} payments (CANCELLED, or without amount/currency/payment method) cannot be stored "
            "before revision 0002; export and delete them first (see docs/kotlin-migration.md)"
        )
