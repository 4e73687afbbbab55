"""Apply Alembic migrations at start-up, under a PostgreSQL advisory lock so that replicas
starting together (on an empty database, or on the Kotlin service's database they adopt)
do not race; and the downgrade an operator runs to roll back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by all replicas; "payments" in ASCII.
MIGRATION_LOCK_KEY = 0x7061796D656E7473
# Tables in our database that the migrations do not manage: the Kotlin service's Flyway
# history stays (a rollback to the Kotlin service needs it) and is not a table to drop.
UNMANAGED_TABLES = frozenset({"flyway_schema_history"})


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's filter for comparing the database with the model (autogenerate)."""
    return not (type_ == "table" and name in UNMANAGED_TABLES)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def _under_lock(sqlalchemy_url: str, run: Callable[[Config], None]) -> None:
    engine = create_async_engine(sqlalchemy_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                await connection.commit()

                def on_connection(sync_connection: Connection) -> None:
                    config = alembic_config(sqlalchemy_url)
                    config.attributes["connection"] = sync_connection
                    run(config)

                await connection.run_sync(on_connection)
                await connection.commit()
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await connection.commit()
    finally:
        await engine.dispose()


async def migrate(sqlalchemy_url: str, revision: str = "head") -> None:
    """Upgrade to `revision` (what the service does at start-up)."""
    await _under_lock(sqlalchemy_url, lambda config: command.upgrade(config, revision))


async def downgrade(sqlalchemy_url: str, revision: str) -> None:
    """Downgrade to `revision` ("base" hands an adopted table back in the Kotlin V1 shape)."""
    await _under_lock(sqlalchemy_url, lambda config: command.downgrade(config, revision))


async def create_database_if_missing(dsn_for_maintenance_db: str, database: str) -> bool:
    """Create `database` (connected through the maintenance database); True if created."""
    connection = await asyncpg.connect(dsn_for_maintenance_db)
    try:
        if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return False
        quoted = '"' + database.replace('"', '""') + '"'
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.exceptions.DuplicateDatabaseError:
            return False
        return True
    finally:
        await connection.close()
