"""Alembic environment: runs on the connection the service hands over (see
app/persistence/migrate.py), or on DB_URL when Alembic is run by hand."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from app.persistence.migrate import include_name
from app.persistence.tables import PaymentRow  # noqa: F401 - registers the table

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from app.config import load_settings

    url = context.config.get_main_option("sqlalchemy.url") or load_settings().sqlalchemy_url()

    async def main() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(main())


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_online()
