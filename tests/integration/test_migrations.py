"""The Alembic history against the real PostgreSQL: from an empty database and from the Kotlin
service's database it ends in the one schema the SQLModel table defines, keeping every row."""

from __future__ import annotations

import asyncio
import os
import subprocess
from decimal import Decimal

import asyncpg
import pytest

from app.domain import PaymentStatus
from app.persistence.mapping import COLUMNS, payment_from_row
from app.persistence.migrate import downgrade, migrate
from tests.schema_support import (
    create_from_model,
    fetch_rows,
    load_kotlin_fixture,
    model_differences,
    scratch_database,
    table_definition,
)
from tests.support import VENV_BIN, Servers

HEAD = "0002"
KOTLIN_COLUMNS = (
    "id, order_id, buyer_id, amount, currency, status, payment_method_type, card_last_four, card_brand, "
    "card_holder_name, expiration_month, expiration_year, transaction_id, failure_reason, created_at, processed_at"
)
KOTLIN_PENDING = {6, 7, 8, 9}  # ids of the fixture's unfinished rows
HIGHEST_KOTLIN_ID = 10  # the fixture's sequence handed out one more id than it stored


async def _version(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [r["version_num"] for r in await connection.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await connection.close()


async def test_empty_database_gets_the_model_schema(servers: Servers) -> None:
    async with scratch_database(servers, "fresh") as db:
        await migrate(db.url)
        assert await _version(db.dsn) == [HEAD]
        assert await model_differences(db.url) == []


async def test_comparison_sees_a_schema_behind_the_model(servers: Servers) -> None:
    """The no-difference checks mean something: at 0001 the refund columns are reported missing."""
    async with scratch_database(servers, "behind") as db:
        await migrate(db.url, "0001")
        added = {diff[3].name for diff in await model_differences(db.url) if diff[0] == "add_column"}
        assert {"cancelled_at", "refund_reason", "refund_requested_at", "refund_id", "refunded_at"} <= added


async def test_kotlin_database_is_adopted_in_place(servers: Servers) -> None:
    async with scratch_database(servers, "kotlin") as db:
        await load_kotlin_fixture(db.dsn)
        before = await fetch_rows(db.dsn, KOTLIN_COLUMNS)
        flyway_before = await fetch_rows_of(db.dsn, "flyway_schema_history")
        await migrate(db.url)
        assert await _version(db.dsn) == [HEAD]
        assert await model_differences(db.url) == []
        assert await fetch_rows(db.dsn, KOTLIN_COLUMNS) == before  # every row, every Kotlin value
        assert await fetch_rows_of(db.dsn, "flyway_schema_history") == flyway_before
        rows = await fetch_rows(db.dsn)
        for payment_id, row in rows.items():
            if payment_id in KOTLIN_PENDING:  # left for the reconciler to charge
                assert row["published_at"] is None
                assert row["lease_until"] is None
                assert row["lease_owner"] is None
            else:  # announced by the Kotlin service: never again
                assert row["published_at"] == (row["processed_at"] or row["created_at"])
            assert row["updated_at"] == (row["processed_at"] or row["created_at"])
        codes = {row["order_id"]: row["failure_code"] for row in rows.values() if row["status"] == "FAILED"}
        assert codes == {7100003: "CARD_DECLINED", 7100004: "INSUFFICIENT_FUNDS", 7100005: "UNKNOWN"}
        assert all(row["failure_code"] is None for row in rows.values() if row["status"] != "FAILED")


async def test_adopted_rows_map_to_domain_payments(servers: Servers) -> None:
    async with scratch_database(servers, "mapped") as db:
        await load_kotlin_fixture(db.dsn)
        await migrate(db.url)
        payments = [payment_from_row(row) for row in (await fetch_rows(db.dsn, ", ".join(COLUMNS))).values()]
        assert len(payments) == 9
        by_order = {p.order_id: p for p in payments}
        assert by_order[7100001].status is PaymentStatus.SUCCEEDED
        assert by_order[7100001].transaction_id == "txn_kotlin_0001"
        assert by_order[7100008].payment_method is not None
        assert by_order[7100008].payment_method.card_last_four is None
        assert by_order[7100009].amount == Decimal("1200.00")
        assert by_order[7100006].announces is None
        assert by_order[7100003].announces is PaymentStatus.FAILED


async def test_fresh_adopted_and_model_schemas_are_identical(servers: Servers) -> None:
    async with (
        scratch_database(servers, "fresh") as fresh,
        scratch_database(servers, "kotlin") as kotlin,
        scratch_database(servers, "model") as model,
    ):
        await load_kotlin_fixture(kotlin.dsn)
        await migrate(fresh.url)  # one at a time: Alembic's operations are process-global
        await migrate(kotlin.url)
        await create_from_model(model.url)
        from_empty = await table_definition(fresh.dsn)
        assert len(from_empty["columns"]) == len(COLUMNS) + 1  # the lease token is not mapped
        assert await table_definition(kotlin.dsn) == from_empty
        assert await table_definition(model.dsn) == from_empty


async def test_ids_continue_after_every_kotlin_id(servers: Servers) -> None:
    async with scratch_database(servers, "ids") as db:
        await load_kotlin_fixture(db.dsn)
        await migrate(db.url)
        connection = await asyncpg.connect(db.dsn)
        try:
            ids = [
                await connection.fetchval(
                    "INSERT INTO payments (order_id, buyer_id, amount, currency, status, payment_method_type)"
                    " VALUES ($1, 'new-buyer', 10, 'USD', 'PROCESSING', 'CREDIT_CARD') RETURNING id",
                    order_id,
                )
                for order_id in (7200001, 7200002)
            ]
            cancelled = await connection.fetchval(
                "INSERT INTO payments (order_id, buyer_id, status) VALUES (7200003, '', 'CANCELLED') RETURNING id"
            )
        finally:
            await connection.close()
        assert [*ids, cancelled] == [HIGHEST_KOTLIN_ID + 1, HIGHEST_KOTLIN_ID + 2, HIGHEST_KOTLIN_ID + 3]


async def _migrate_in_process(jdbc_url: str, servers: Servers) -> tuple[int, bytes]:
    """`payment-service migrate` as a replica runs it, in its own process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENT_", "RABBITMQ_", "DB_"))}
    environment |= {"DB_URL": jdbc_url, "DB_USERNAME": servers.db_user}
    if servers.db_password:
        environment["DB_PASSWORD"] = servers.db_password
    process = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "payment-service"),
        "migrate",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output


async def test_empty_kotlin_table_is_adopted(servers: Servers) -> None:
    """A Kotlin deployment that never took an order: adopted all the same, ids from 1."""
    async with scratch_database(servers, "empty") as db:
        await load_kotlin_fixture(db.dsn)
        connection = await asyncpg.connect(db.dsn)
        try:
            await connection.execute("TRUNCATE payments; ALTER SEQUENCE payments_id_seq RESTART")
            await migrate(db.url)
            first = await connection.fetchval(
                "INSERT INTO payments (order_id, buyer_id, status) VALUES (1, '', 'CANCELLED') RETURNING id"
            )
        finally:
            await connection.close()
        assert first == 1
        assert await model_differences(db.url) == []


async def test_replicas_starting_together_adopt_once(servers: Servers) -> None:
    async with scratch_database(servers, "race") as db:
        await load_kotlin_fixture(db.dsn)
        before = await fetch_rows(db.dsn, KOTLIN_COLUMNS)
        results = await asyncio.gather(*(_migrate_in_process(db.jdbc_url, servers) for _ in range(3)))
        assert [code for code, _ in results] == [0, 0, 0], results
        assert await _version(db.dsn) == [HEAD]
        assert await fetch_rows(db.dsn, KOTLIN_COLUMNS) == before
        assert await model_differences(db.url) == []


async def test_downgrade_hands_back_the_kotlin_table(servers: Servers) -> None:
    async with scratch_database(servers, "pristine") as pristine, scratch_database(servers, "back") as db:
        await load_kotlin_fixture(pristine.dsn)
        await load_kotlin_fixture(db.dsn)
        before = await fetch_rows(db.dsn, KOTLIN_COLUMNS)
        await migrate(db.url)
        await downgrade(db.url, "base")
        assert await table_definition(db.dsn) == await table_definition(pristine.dsn)
        assert await fetch_rows(db.dsn, KOTLIN_COLUMNS) == before
        connection = await asyncpg.connect(db.dsn)
        try:  # as the Kotlin service inserts: the sequence still numbers after every used id
            new_id = await connection.fetchval(
                "INSERT INTO payments (order_id, buyer_id, amount, payment_method_type)"
                " VALUES (7300001, 'b', 1, 'CREDIT_CARD') RETURNING id"
            )
        finally:
            await connection.close()
        assert new_id == HIGHEST_KOTLIN_ID + 1
        await migrate(db.url)  # and it can be adopted again
        assert await model_differences(db.url) == []


async def test_fresh_database_downgrades_and_upgrades(servers: Servers) -> None:
    async with scratch_database(servers, "down") as db, scratch_database(servers, "at1") as at_0001:
        await migrate(db.url)
        await migrate(at_0001.url, "0001")
        await downgrade(db.url, "0001")
        assert await table_definition(db.dsn) == await table_definition(at_0001.dsn)
        await downgrade(db.url, "base")
        assert await table_definition(db.dsn) == {"columns": {}, "constraints": {}, "indexes": {}, "sequences": {}}
        await migrate(db.url)
        assert await model_differences(db.url) == []


async def test_downgrade_refuses_rows_the_old_schema_cannot_hold(servers: Servers) -> None:
    async with scratch_database(servers, "refuse") as db:
        await migrate(db.url)
        connection = await asyncpg.connect(db.dsn)
        try:
            await connection.execute("INSERT INTO payments (order_id, buyer_id, status) VALUES (1, '', 'CANCELLED')")
        finally:
            await connection.close()
        with pytest.raises(RuntimeError, match="1 payments"):
            await downgrade(db.url, "0001")
        assert await _version(db.dsn) == [HEAD]
        assert await model_differences(db.url) == []


# Each case: a database that is not exactly Kotlin V1 (fixture loaded first, then changed).
@pytest.mark.parametrize(
    ("kotlin", "change", "message"),
    [
        (False, "CREATE TABLE payments (id bigserial PRIMARY KEY, order_id bigint)", "no Flyway history"),
        (True, "UPDATE flyway_schema_history SET success = false", r"version 1 can be adopted.*\[\]"),
        (
            True,
            "INSERT INTO flyway_schema_history VALUES (2, '2', 'more', 'SQL', 'V2__more.sql', 1, 'p', now(), 1, true)",
            r"version 1 can be adopted.*\['1', '2'\]",
        ),
        (True, "ALTER TABLE payments ADD COLUMN note text", "differs from Kotlin V1"),
        (True, "UPDATE payments SET status = 'ON_HOLD' WHERE id = 6", "statuses this service does not know"),
    ],
)
async def test_unknown_tables_are_not_touched(servers: Servers, kotlin: bool, change: str, message: str) -> None:
    async with scratch_database(servers, "unknown") as db:
        if kotlin:
            await load_kotlin_fixture(db.dsn)
        connection = await asyncpg.connect(db.dsn)
        try:
            await connection.execute(change)
            before = await table_definition(db.dsn)
            rows = await fetch_rows(db.dsn)
            with pytest.raises(RuntimeError, match=message):
                await migrate(db.url)
            assert await table_definition(db.dsn) == before
            assert await fetch_rows(db.dsn) == rows
            assert await connection.fetchval("SELECT to_regclass('alembic_version')") is None
        finally:
            await connection.close()


async def fetch_rows_of(dsn: str, table: str) -> list[dict]:
    connection = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await connection.fetch(f"SELECT * FROM {table} ORDER BY 1")]
    finally:
        await connection.close()


async def test_the_command_line_downgrades_for_a_rollback(servers: Servers) -> None:
    """`payment-service migrate --downgrade-to REVISION`, as the runbook's rollback runs it."""
    async with scratch_database(servers, "cli") as db:
        await migrate(db.url)
        env = {**os.environ, "DB_URL": db.jdbc_url, "DB_USERNAME": servers.db_user}
        done = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "payment-service"), "migrate", "--downgrade-to", "0001"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "downgraded to 0001" in done.stdout
        assert await _version(db.dsn) == ["0001"]
