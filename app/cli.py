"""The `payment-service` command.

    payment-service                 run the service (HTTP + consumer) in the foreground
    payment-service migrate [--create-database]
                                    apply database migrations (optionally create the database)
    payment-service dlq list [--limit N]
                                    show the parked messages (JSON), without removing them
    payment-service dlq replay [--limit N]
                                    move parked messages back to the consumed queue (JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.config import Settings, load_settings_or_exit


def serve(settings: Settings) -> int:
    import signal

    import uvicorn

    class _Server(uvicorn.Server):
        """SIGTERM is the normal way to stop a pod: after the graceful shutdown, exit 0
        instead of re-raising the signal."""

        def handle_exit(self, sig: int, frame) -> None:  # noqa: ANN001
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    from app.observability.logs import configure_logging
    from app.bootstrap import create_app

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
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


async def _migrate(settings: Settings, create_database: bool) -> None:
    from app.persistence.migrate import create_database_if_missing, migrate

    if create_database:
        created = await create_database_if_missing(settings.postgres_dsn("postgres"), settings.database_name)
        print(f"database {settings.database_name}: {'created' if created else 'exists'}")
    await migrate(settings.sqlalchemy_url())
    print("migrations applied")


def _dlq(settings: Settings, action: str, limit: int | None) -> int:
    import json

    from app.messaging.dlq import BROKER_ERRORS, DlqError, DlqOperations

    operations = DlqOperations.from_settings(settings)
    try:
        if action == "list":
            result = asyncio.run(operations.list(limit or 100))
        else:
            result = asyncio.run(operations.replay(limit))
    except (DlqError, ValueError, *BROKER_ERRORS) as error:
        print(f"dlq {action} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    return 0


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payment-service", description="Foodies payment service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service (default)")
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--create-database", action="store_true", help="create the database if it is missing")
    dlq = commands.add_parser("dlq", help="inspect or replay the parking lot (<queue>.dlq)")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", required=True)
    dlq_list = dlq_actions.add_parser("list", help="show the parked messages without removing them")
    dlq_list.add_argument(
        "--limit", type=_positive, default=100, help="at most this many messages (default 100, max 1000)"
    )
    dlq_replay = dlq_actions.add_parser("replay", help="move parked messages back to the consumed queue")
    dlq_replay.add_argument("--limit", type=_positive, default=None, help="at most this many messages (default: all)")
    args = parser.parse_args(argv)

    settings = load_settings_or_exit()
    if args.command == "migrate":
        try:
            asyncio.run(_migrate(settings, args.create_database))
        except (OSError, Exception) as error:  # noqa: BLE001 - one line for the operator
            print(f"migration failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "dlq":
        return _dlq(settings, args.dlq_action, args.limit)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
