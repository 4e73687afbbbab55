"""Apply Alembic migrations at start-up, under a PostgreSQL advisory lock so that replicas
starting together on an empty database do not race."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by all replicas; "payments" in ASCII.
MIGRATION_LOCK_KEY = 0x7061796D656E7473


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(sqlalchemy_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                await connection.commit()

                def upgrade(sync_connection) -> None:  # noqa: ANN001
                    config = alembic_config(sqlalchemy_url)
                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, "head")

                await connection.run_sync(upgrade)
                await connection.commit()
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await connection.commit()
    finally:
        await engine.dispose()


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
