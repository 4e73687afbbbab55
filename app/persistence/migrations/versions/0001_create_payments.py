"""create payments, or adopt the Kotlin service's payments table in place

Revision ID: 0001
Revises:
Create Date: 2026-11-26

An empty database gets the table created. A database the Kotlin payment service left behind
(Flyway history at version 1, its `payments` table with rows, no Alembic history) has that
table altered into the same shape instead, keeping every row; see docs/kotlin-migration.md.
The Flyway history table is left untouched: it is what the Kotlin service needs to run
again on this database after a downgrade.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES_0001 = "('PENDING', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'REFUNDED')"

# The Kotlin V1 table, as Flyway's V1 script created it.
KOTLIN_COLUMNS = frozenset(
    {
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
        "created_at",
        "processed_at",
    }
)
KOTLIN_INDEXES = {
    "idx_payments_order_id": "order_id",
    "idx_payments_buyer_id": "buyer_id",
    "idx_payments_status": "status",
    "idx_payments_created_at": "created_at",
}
# Kotlin V1 width -> ours, for the columns where ours is wider.
WIDENED = {"payment_method_type": (20, 32), "card_brand": (20, 32), "card_holder_name": (200, 255)}
# Constraint names PostgreSQL gave V1's inline constraints -> ours.
RENAMED = {"payments_order_id_key": "uq_payments_order_id", "payments_amount_check": "ck_payments_amount_positive"}
ADDED = ("failure_code", "event_id", "updated_at", "lease_owner", "lease_until", "published_at")

# Kotlin did not store a failure code. Its failure reasons are the gateway's fixed texts, so the
# code is derived from them; any other text becomes UNKNOWN (a code the order service accepts).
FAILURE_CODE_FROM_REASON = """CASE failure_reason
    WHEN 'Insufficient funds' THEN 'INSUFFICIENT_FUNDS'
    WHEN 'Card declined' THEN 'CARD_DECLINED'
    WHEN 'Card expired' THEN 'CARD_EXPIRED'
    WHEN 'Invalid card' THEN 'INVALID_CARD'
    WHEN 'Fraud suspected' THEN 'FRAUD_SUSPECTED'
    WHEN 'Payment gateway unavailable' THEN 'GATEWAY_ERROR'
    WHEN 'Payment gateway timeout' THEN 'TIMEOUT'
    ELSE 'UNKNOWN' END"""


def upgrade() -> None:
    if _table_exists("payments"):
        _require_kotlin_v1()
        _adopt_kotlin_table()
    else:
        _create_table()
    _create_indexes()


def downgrade() -> None:
    if _table_exists("flyway_schema_history"):
        _drop_indexes()
        _restore_kotlin_table()
    else:
        op.drop_table("payments")


# --------------------------------------------------------------------------- empty database
def _create_table() -> None:
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
        sa.CheckConstraint(f"status IN {STATUSES_0001}", name="ck_payments_status"),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    )


def _create_indexes() -> None:
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


def _drop_indexes() -> None:
    for name in (
        "ix_payments_buyer_id_created_at",
        "ix_payments_status_created_at",
        "ix_payments_unfinished_lease",
        "ix_payments_unpublished",
    ):
        op.drop_index(name, table_name="payments")


# --------------------------------------------------------------------------- Kotlin database
def _table_exists(name: str) -> bool:
    return op.get_bind().execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar_one()


def _require_kotlin_v1() -> None:
    """Refuse anything but the table Flyway's V1 made: altering an unknown table could lose data."""
    bind = op.get_bind()
    if not _table_exists("flyway_schema_history"):
        raise RuntimeError("a payments table exists but there is no Flyway history: not a Kotlin database")
    versions = set(
        bind.execute(
            sa.text("SELECT version FROM flyway_schema_history WHERE success AND version IS NOT NULL")
        ).scalars()
    ) - {"0"}  # Flyway's schema-creation marker, if it made the schema
    if versions != {"1"}:
        raise RuntimeError(f"only Kotlin schema version 1 can be adopted; Flyway history has {sorted(versions)}")
    columns = {c["name"] for c in sa.inspect(bind).get_columns("payments")}
    if columns != KOTLIN_COLUMNS:
        raise RuntimeError(f"payments differs from Kotlin V1: columns {sorted(columns ^ KOTLIN_COLUMNS)}")
    unknown = bind.execute(
        sa.text(f"SELECT DISTINCT status FROM payments WHERE status NOT IN {STATUSES_0001}")
    ).scalars()
    if found := sorted(unknown):
        raise RuntimeError(f"payments has statuses this service does not know: {found}")


def _adopt_kotlin_table() -> None:
    _serial_to_identity()
    for kotlin_name, our_name in RENAMED.items():
        op.execute(f"ALTER TABLE payments RENAME CONSTRAINT {kotlin_name} TO {our_name}")
    for name in KOTLIN_INDEXES:
        op.drop_index(name, table_name="payments")
    for column in ("currency", "status"):  # every insert names them; a default would hide a bug
        op.alter_column("payments", column, server_default=None)
    for name, (_kotlin, ours) in WIDENED.items():
        op.alter_column("payments", name, type_=sa.String(ours))
    op.add_column("payments", sa.Column("failure_code", sa.String(32)))
    op.add_column("payments", sa.Column("event_id", sa.String(255)))
    op.add_column("payments", sa.Column("updated_at", sa.DateTime(timezone=True)))
    op.add_column("payments", sa.Column("lease_owner", sa.Uuid))
    op.add_column("payments", sa.Column("lease_until", sa.DateTime(timezone=True)))
    op.add_column("payments", sa.Column("published_at", sa.DateTime(timezone=True)))
    # Final rows were announced by the Kotlin service: mark them published so that they are
    # never announced again. Unfinished rows keep no lease: the reconciler charges them.
    op.execute(
        f"""UPDATE payments SET
            updated_at = coalesce(processed_at, created_at),
            published_at = CASE WHEN status IN ('PENDING', 'PROCESSING') THEN NULL
                                ELSE coalesce(processed_at, created_at) END,
            failure_code = CASE WHEN status = 'FAILED' THEN {FAILURE_CODE_FROM_REASON} END"""
    )
    op.alter_column("payments", "updated_at", nullable=False, server_default=sa.func.now())
    op.create_check_constraint("ck_payments_status", "payments", f"status IN {STATUSES_0001}")


def _serial_to_identity() -> None:
    """BIGSERIAL -> identity column, numbering on after every id Kotlin used or handed out."""
    bind = op.get_bind()
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('payments', 'id')")).scalar_one()
    handed_out = bind.execute(sa.text(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"))
    highest = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM payments")).scalar_one()
    following = max(handed_out.scalar_one(), highest) + 1
    op.execute("ALTER TABLE payments ALTER COLUMN id DROP DEFAULT")
    op.execute(f"DROP SEQUENCE {sequence}")
    op.execute("ALTER TABLE payments ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    bind.execute(sa.text("SELECT setval(pg_get_serial_sequence('payments', 'id'), :next, false)"), {"next": following})


def _restore_kotlin_table() -> None:
    """The reverse of the adoption: the table exactly as Kotlin V1 had it, rows kept."""
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    for column in ADDED:
        op.drop_column("payments", column)
    for name, (kotlin, _ours) in WIDENED.items():
        op.alter_column("payments", name, type_=sa.String(kotlin))  # fails, changing nothing, if too long
    op.alter_column("payments", "currency", server_default=sa.text("'USD'::character varying"))
    op.alter_column("payments", "status", server_default=sa.text("'PENDING'::character varying"))
    for name, column in KOTLIN_INDEXES.items():
        op.create_index(name, "payments", [column])
    for kotlin_name, our_name in RENAMED.items():
        op.execute(f"ALTER TABLE payments RENAME CONSTRAINT {our_name} TO {kotlin_name}")
    bind = op.get_bind()
    following = bind.execute(sa.text("SELECT nextval(pg_get_serial_sequence('payments', 'id'))")).scalar_one()
    op.execute("ALTER TABLE payments ALTER COLUMN id DROP IDENTITY")
    op.execute("CREATE SEQUENCE payments_id_seq OWNED BY payments.id")
    op.execute("ALTER TABLE payments ALTER COLUMN id SET DEFAULT nextval('payments_id_seq'::regclass)")
    bind.execute(sa.text("SELECT setval('payments_id_seq', :next, false)"), {"next": following})
