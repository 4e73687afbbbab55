"""Run the fake payment gateway: `python -m app.gateway.fake_server --port 8090` (or `payment-service fake-gateway`)."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from app.gateway.fake import DEFAULT_API_KEY, FakeGatewayState, create_app

KEY_VARIABLE = "PAYMENT_GATEWAY_API_KEY"  # the service's own variable: one setting serves both sides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fake-gateway",
        description="An in-memory fake of the Stripe-style payment gateway (POST /v1/charges, /v1/refunds), "
        "with fault controls (/_control) and an audit view (/_audit). For tests and local runs only.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the API key callers must send (default: ${KEY_VARIABLE}, else {DEFAULT_API_KEY})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(KEY_VARIABLE) or DEFAULT_API_KEY
    source = "--api-key" if args.api_key else KEY_VARIABLE if os.environ.get(KEY_VARIABLE) else "the default test key"
    print(f"fake gateway on http://{args.host}:{args.port} (API key from {source})", file=sys.stderr)
    uvicorn.run(create_app(FakeGatewayState(api_key)), host=args.host, port=args.port, timeout_graceful_shutdown=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
