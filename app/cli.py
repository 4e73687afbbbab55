"""The `payment-service` command.

    payment-service                 run the service (HTTP + consumer) in the foreground
    payment-service migrate [--create-database]
                                    apply database migrations (optionally create the database)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.config import Settings, load_settings_or_exit


def serve(settings: Settings) -> int:
    import uvicorn

    from app.logs import configure_logging
    from app.main import create_app

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=True,
        loop="auto",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds) + 5),
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


async def _migrate(settings: Settings, create_database: bool) -> None:
    from app.persistence.migrate import create_database_if_missing, migrate

    if create_database:
        created = await create_database_if_missing(settings.postgres_dsn("postgres"), settings.database_name)
        print(f"database {settings.database_name}: {'created' if created else 'exists'}")
    await migrate(settings.sqlalchemy_url())
    print("migrations applied")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payment-service", description="Foodies payment service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (default)")
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--create-database", action="store_true", help="create the database if it is missing")
    args = parser.parse_args(argv)

    settings = load_settings_or_exit()
    if args.command == "migrate":
        try:
            asyncio.run(_migrate(settings, args.create_database))
        except (OSError, Exception) as error:  # noqa: BLE001 - one line for the operator
            print(f"migration failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        return 0
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
