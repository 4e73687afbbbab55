"""The fake gateway's HTTP face (Starlette): the Stripe-style API, fault controls, the audit view, and a runner.

API (needs `Authorization: Bearer <key>` and `Idempotency-Key`):
  POST /v1/charges, POST /v1/refunds — cards by `paymentMethod.cardLastFour` as the simulated gateway.
Test controls (no key; bind the fake to loopback):
  GET|POST /_control  {latency_ms, error_rate, outage_seconds, unauthorized_seconds, reset}
  POST /_reset        forget every charge, refund and fault
  GET /_audit         every key with how often it was seen and its answers; captured charges and refunds per order
  GET /_health        200 when serving
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.gateway.fake.state import Answer, FakeGatewayState, failure

DEFAULT_API_KEY = "sk_test_foodies_fake"
SILENT_LIMIT_S = 600.0  # the silent card gives up on a caller that never hangs up
Operation = Callable[[str, dict[str, Any]], tuple[Answer, bool]]


def _respond(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


async def _silence(request: Request) -> None:
    """Never answer; return once the caller hangs up (or after a long while)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SILENT_LIMIT_S
    # Polling: Starlette tells of a hang-up only when asked (is_disconnected), not by an event.
    while loop.time() < give_up and not await request.is_disconnected():  # noqa: ASYNC110 - see above
        await asyncio.sleep(0.02)


async def _api(request: Request, state: FakeGatewayState, endpoint: str, operation: Operation) -> Response:
    key = request.headers.get("idempotency-key")
    if not key:
        return _respond(failure(400, "invalid_request_error", "idempotency_key_missing", "Idempotency-Key required"))
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _respond(failure(400, "invalid_request_error", "parameter_invalid", "a JSON object is required"))
    state.see(endpoint, key, body)
    latency = state.faults.latency_ms / 1000
    early = state.injected(request.headers.get("authorization")) or state.begin(endpoint, key, body)
    if early is not None:
        await asyncio.sleep(latency)
        state.note(key, early.status)
        return _respond(early)
    try:
        await asyncio.sleep(latency)  # the key stays in use meanwhile: a concurrent request gets 409
        answer, store = operation(key, body)
        if answer.hang:
            state.finish(key, answer, store=False)  # recorded with status 0: never answered
            await _silence(request)
            return Response(status_code=504)
        return _respond(state.finish(key, answer, store=store))
    finally:
        state.in_flight.discard(key)


def create_app(state: FakeGatewayState) -> Starlette:
    async def charges(request: Request) -> Response:
        return await _api(request, state, "/v1/charges", state.charge)

    async def refunds(request: Request) -> Response:
        return await _api(request, state, "/v1/refunds", state.refund)

    async def control(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(state.controls())
        try:
            settings = await request.json()
            return JSONResponse(state.control(settings if isinstance(settings, dict) else {}))
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": {"type": "invalid_request_error", "message": str(error)}}, status_code=400)

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    async def audit(request: Request) -> Response:
        return JSONResponse(state.audit())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "UP"})

    return Starlette(
        routes=[
            Route("/v1/charges", charges, methods=["POST"]),
            Route("/v1/refunds", refunds, methods=["POST"]),
            Route("/_control", control, methods=["GET", "POST"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_audit", audit, methods=["GET"]),
            Route("/_health", health, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    """A uvicorn server inside someone else's process: it leaves the signal handlers alone."""

    def capture_signals(self) -> Any:
        return nullcontext()


@dataclass(frozen=True, slots=True)
class RunningFakeGateway:
    url: str
    api_key: str
    state: FakeGatewayState


@asynccontextmanager
async def running_fake_gateway(
    *, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningFakeGateway]:
    """The fake gateway served in this event loop on a real socket (port 0: a free one)."""
    state = FakeGatewayState(api_key)
    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_config=None,  # keep the host process's logging as it is
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # it failed to start: raise why
            raise RuntimeError("the fake gateway stopped before it started")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningFakeGateway(f"http://{host}:{bound}", api_key, state)
    finally:
        server.should_exit = True
        await serving
