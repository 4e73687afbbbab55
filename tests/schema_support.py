"""Test helpers for the row schema: scratch databases, the Kotlin-state fixture, a snapshot
of the `payments` table's definition and Alembic's model-versus-database comparison."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from app.persistence.migrate import include_name
from app.persistence.tables import PaymentRow
from tests.support import Servers

KOTLIN_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "kotlin_v1.sql"


@dataclass(frozen=True)
class Scratch:
    """One throw-away database: its name, an asyncpg DSN and a SQLAlchemy (asyncpg) URL."""

    name: str
    dsn: str
    url: str
    jdbc_url: str


@asynccontextmanager
async def scratch_database(servers: Servers, tag: str) -> AsyncIterator[Scratch]:
    """A new empty database named after the test database, dropped afterwards."""
    name = f"{servers.db_name}_{tag}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.db_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = servers.dsn().rsplit("/", 1)[0] + f"/{name}"
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        jdbc_url = f"jdbc:postgresql://{servers.db_host}:{servers.db_port}/{name}"
        yield Scratch(name, dsn, url, jdbc_url)
    finally:
        # FORCE: a service under test may still hold a connection to it.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def load_kotlin_fixture(dsn: str) -> None:
    """Bring a database into the state the Kotlin service leaves behind."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(KOTLIN_FIXTURE.read_text())
    finally:
        await connection.close()


async def create_from_model(url: str) -> None:
    """The table straight from the SQLModel definition (no migrations)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: SQLModel.metadata.create_all(sync, tables=[PaymentRow.__table__]))
    finally:
        await engine.dispose()


async def model_differences(url: str) -> list[Any]:
    """Alembic autogenerate's differences between the SQLModel table and the database."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:

            def compare(sync_connection: Any) -> list[Any]:
                context = MigrationContext.configure(
                    sync_connection,
                    opts={"compare_type": True, "compare_server_default": True, "include_name": include_name},
                )
                return compare_metadata(context, SQLModel.metadata)

            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


_COLUMNS = """
SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, is_nullable,
       column_default, is_identity, identity_generation, identity_start, identity_increment, identity_maximum,
       identity_minimum, identity_cycle, collation_name
FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1
"""
_CONSTRAINTS = """
SELECT conname, contype, pg_get_constraintdef(oid) AS definition, condeferrable, condeferred
FROM pg_constraint WHERE conrelid = to_regclass($1)
"""
_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1"
_SEQUENCES = """
SELECT s.sequencename, s.data_type::text, s.start_value, s.min_value, s.max_value, s.increment_by, s.cycle,
       s.cache_size, d.deptype
FROM pg_sequences s
JOIN pg_class c ON c.relname = s.sequencename AND c.relkind = 'S'
JOIN pg_depend d ON d.objid = c.oid AND d.refobjid = to_regclass($1)
WHERE s.schemaname = current_schema()
"""


async def table_definition(dsn: str, table: str = "payments") -> dict[str, Any]:
    """Everything that defines a table, for comparing two databases: columns (type, width,
    nullability, default, identity), constraints, indexes and its sequence. Keyed by name;
    the order of the columns is not part of it (an altered table keeps its old order)."""
    connection = await asyncpg.connect(dsn)
    try:
        columns = {r["column_name"]: dict(r) for r in await connection.fetch(_COLUMNS, table)}
        constraints = {r["conname"]: dict(r) for r in await connection.fetch(_CONSTRAINTS, table)}
        indexes = {r["indexname"]: r["indexdef"] for r in await connection.fetch(_INDEXES, table)}
        sequences = {r["sequencename"]: dict(r) for r in await connection.fetch(_SEQUENCES, table)}
    finally:
        await connection.close()
    return {"columns": columns, "constraints": constraints, "indexes": indexes, "sequences": sequences}


async def fetch_rows(dsn: str, columns: str = "*") -> dict[int, dict[str, Any]]:
    """Every payment by id."""
    connection = await asyncpg.connect(dsn)
    try:
        return {r["id"]: dict(r) for r in await connection.fetch(f"SELECT {columns} FROM payments ORDER BY id")}
    finally:
        await connection.close()
