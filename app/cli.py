"""The `payment-service` command: serve (the default), migrate, dlq, refund and fake-gateway.

    payment-service [serve]         run the service (HTTP + consumers) in the foreground
    payment-service migrate [--create-database | --downgrade-to REVISION]
    payment-service dlq list|replay [--queue stock-confirmed|order-cancelled] [--limit N]
    payment-service refund ORDER_ID [--reason TEXT]
    payment-service fake-gateway [--host H] [--port 8090]
    payment-service --version

Arguments are checked by the parser (ranges included); settings come from the environment and
`payment-service serve --help` lists them all with their defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from app import __version__
from app.config import Settings, load_settings_or_exit
from app.messaging.dlq import LOT_ROLES, MAX_LIST, MAX_REPLAY
from app.settings_help import settings_help

MAX_ORDER_ID = 2**63 - 1  # order ids are 64-bit (BIGINT) throughout Foodies
MAX_REASON = 500  # the width of the refund_reason column


def serve(settings: Settings) -> int:
    import signal

    import uvicorn

    from app.bootstrap import create_app
    from app.observability.logs import configure_logging

    class _Server(uvicorn.Server):
        """SIGTERM is the normal way to stop a pod: after the graceful shutdown, exit 0
        instead of re-raising the signal."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=True,
        loop="auto",
        # No `server: uvicorn` header: it tells a caller nothing it needs and names the stack.
        # The Date header stays (HTTP asks origin servers with a clock to send it).
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds) + 5),
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


async def _migrate(settings: Settings, create_database: bool, downgrade_to: str | None = None) -> None:
    from app.persistence.migrate import create_database_if_missing, downgrade, migrate

    if downgrade_to is not None:
        await downgrade(settings.sqlalchemy_url(), downgrade_to)
        print(f"downgraded to {downgrade_to}")
        return
    if create_database:
        created = await create_database_if_missing(settings.postgres_dsn("postgres"), settings.database_name)
        print(f"database {settings.database_name}: {'created' if created else 'exists'}")
    await migrate(settings.sqlalchemy_url())
    print("migrations applied")


def _run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        asyncio.run(_migrate(settings, args.create_database, args.downgrade_to))
    except Exception as error:  # noqa: BLE001 - any failure becomes one line for the operator
        print(f"migration failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from app.messaging.dlq import BROKER_ERRORS, DlqError, DlqOperations

    operations = DlqOperations.from_settings(settings)
    failures: tuple[type[BaseException], ...] = (DlqError, ValueError, *BROKER_ERRORS)
    try:
        if args.dlq_action == "list":
            result: Any = asyncio.run(operations.list(args.limit, queue=args.queue))
        else:
            result = asyncio.run(operations.replay(args.limit, queue=args.queue))
    except failures as error:
        print(f"dlq {args.dlq_action} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    return 0


def _run_refund(settings: Settings, args: argparse.Namespace) -> int:
    # Composed like the service (ledger, gateway, publisher), so it lives beside create_app.
    from app.bootstrap import refund_from_cli

    return int(refund_from_cli(settings, args.order_id, args.reason))


def _run_serve(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from low to high, else the parser's usage error."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
        if not low <= value <= high:
            wanted = f"a positive integer, at most {high}" if low == 1 else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {wanted} (got {value})")
        return value

    return parse


def bounded_text(max_length: int) -> Callable[[str], str]:
    """An argparse type: non-blank text of at most max_length characters."""

    def parse(raw: str) -> str:
        if not raw.strip():
            raise argparse.ArgumentTypeError("must not be blank")
        if len(raw) > max_length:
            raise argparse.ArgumentTypeError(f"at most {max_length} characters (got {len(raw)})")
        return raw

    return parse


def _add_dlq(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="inspect or replay a parking lot (<queue>.dlq)")
    actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="show the parked messages (JSON) without removing them")
    listing.add_argument(
        "--limit", type=bounded_int(1, MAX_LIST), default=100, help=f"at most this many (1..{MAX_LIST}; default 100)"
    )
    replay = actions.add_parser("replay", help="move parked messages back to their queue (JSON summary)")
    replay.add_argument(
        "--limit",
        type=bounded_int(1, MAX_REPLAY),
        default=None,
        help=f"at most this many (1..{MAX_REPLAY}; default: all parked now)",
    )
    for action in (listing, replay):
        action.add_argument(
            "--queue", choices=LOT_ROLES, default=LOT_ROLES[0], help="whose parking lot (default: %(default)s)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payment-service",
        description="Foodies payment service. Without a command: serve.",
        epilog="`payment-service serve --help` lists every setting (environment variable) with its default.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the service: HTTP and the consumers (the default)",
        description="Apply migrations, then serve HTTP and consume until SIGTERM. Configured by the environment.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--create-database", action="store_true", help="create the database if it is missing")
    migrate.add_argument(
        "--downgrade-to",
        metavar="REVISION",
        help='undo migrations down to REVISION ("base" hands an adopted Kotlin table back in its V1 shape)',
    )
    _add_dlq(commands)
    refund = commands.add_parser("refund", help="refund a successful payment (exit 0 when refunded)")
    refund.add_argument("order_id", metavar="ORDER_ID", type=bounded_int(1, MAX_ORDER_ID), help="the order's id")
    refund.add_argument("--reason", type=bounded_text(MAX_REASON), help=f"recorded with the refund (<= {MAX_REASON})")
    fake = commands.add_parser("fake-gateway", help="run a local fake of the HTTP payment gateway (for tests)")
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    fake.add_argument("--port", type=bounded_int(1, 65535), default=8090, help="port (default: %(default)s)")
    return parser


_COMMANDS: dict[str | None, Callable[[Settings, argparse.Namespace], int]] = {
    "migrate": _run_migrate,
    "dlq": _run_dlq,
    "refund": _run_refund,
    "serve": _run_serve,
    None: _run_serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "fake-gateway":
        # Needs none of the service's settings.
        from app.gateway.fake_server import main as fake_gateway

        return int(fake_gateway(["--host", args.host, "--port", str(args.port)]))
    return _COMMANDS[args.command](load_settings_or_exit(), args)


if __name__ == "__main__":
    sys.exit(main())
