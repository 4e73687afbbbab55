"""Health probes and the metrics scrape, kept cheap under many concurrent callers.

Readiness is computed off the request path: a background task refreshes the checks about once
a second and a probe only reads the last answer. Scrapes share one rendering of the metrics
for about a second. Either way a poller, however eager, costs the service about one check
(or one rendering) a second, never one per request.

What is left is the request itself (uvicorn, routing, the access line): `ProbeAnswers` answers
these paths in front of the router, and paces each client address so that a poller in a tight
loop cannot take the CPU the payments need.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from app.http.ratelimit import Pacer

UP, DOWN, UNKNOWN = "UP", "DOWN", "UNKNOWN"
# Each client address gets at most PROBE_RATE answers a second on the probe and metrics paths,
# after a burst of two seconds' worth; a faster request is delayed (never refused), and never by
# more than PROBE_MAX_WAIT_S, well inside kubelet's default probe timeout of 1 s. Kubelet probes
# a pod about every 10 s per probe and Prometheus scrapes every 15-60 s, far below; a poller in a
# tight loop is held to PROBE_RATE answers a second. Constants rather than settings: no
# deployment needs another value, and a wrong one could only delay its own probes.
PROBE_RATE = 20.0
PROBE_BURST = 2 * PROBE_RATE
PROBE_MAX_WAIT_S = 0.5
Ping = Callable[[], Awaitable[bool]]
Check = Callable[[], Any]  # returns a value or an awaitable of one


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    at: float  # monotonic time of the refresh


NOT_YET = Readiness(False, {"database": UNKNOWN, "rabbitmq": UNKNOWN, "consumer": UNKNOWN, "gateway": UNKNOWN}, 0.0)


@dataclass(eq=False)
class Health:
    """What the probes report.

    `started`/`stopping` are set by the service's lifecycle and read at once. The checks —
    `database()` and `broker()` (async pings), `consumers_ok()` (a live consumer on every
    queue) and `gateway_state()` ("UP"/"DOWN") — run in the refresher that `start()` launches
    and `stop()` ends. Ready = started, not stopping, database, RabbitMQ and consumers UP; a
    gateway that is DOWN is shown but does not make the service unready (payments wait for it).
    A check that is not wired is UNKNOWN and does not count. Without a running refresher, a
    probe refreshes a stale answer itself, one refresh shared by all callers.
    """

    started: bool = False
    stopping: bool = False
    database: Ping | None = None
    broker: Ping | None = None
    consumers_ok: Check | None = None
    gateway_state: Check | None = None
    interval_s: float = 1.0
    timeout_s: float = 2.5
    clock: Callable[[], float] = time.monotonic
    _last: Readiness = field(default=NOT_YET, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _refreshing: asyncio.Future[Readiness] | None = field(default=None, init=False)
    refreshes: int = field(default=0, init=False)

    async def start(self) -> None:
        if self._task is None:
            # A probe may have started a refresh before the consumers were attached; its answer
            # (not ready) would stand until the next refresh. Let it finish, then check afresh,
            # so that readiness turns 200 as soon as the service is ready.
            if self._refreshing is not None:
                with suppress(Exception):
                    await asyncio.shield(self._refreshing)
            await self.refresh()
            self._task = asyncio.create_task(self._run(), name="health-refresher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception as error:  # noqa: BLE001 - the refresher must outlive any one failure
                logger.warning("health refresh failed: {error}", error=type(error).__name__)

    async def refresh(self) -> Readiness:
        """Run every check now (concurrently, each bounded by `timeout_s`); one run at a time."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            result = await self._check_all()
            self._last = result
            self._refreshing.set_result(result)
            return result
        except BaseException as error:
            self._refreshing.set_exception(error)
            self._refreshing.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._refreshing = None

    async def _check_all(self) -> Readiness:
        database, broker, consumer, gateway = await asyncio.gather(
            self._flag(self.database), self._flag(self.broker), self._flag(self.consumers_ok), self._state()
        )
        self.refreshes += 1
        checks = {"database": database, "rabbitmq": broker, "consumer": consumer, "gateway": gateway}
        ready = all(state == UP for state in (database, broker)) and consumer != DOWN
        return Readiness(ready, checks, self.clock())

    async def _call(self, check: Check) -> Any:
        async with asyncio.timeout(self.timeout_s):
            value = check()
            return await value if inspect.isawaitable(value) else value

    async def _flag(self, check: Check | None) -> str:
        if check is None:
            return UNKNOWN
        try:
            return UP if await self._call(check) else DOWN
        except Exception:  # noqa: BLE001 - any failure of a check is DOWN
            return DOWN

    async def _state(self) -> str:
        if self.gateway_state is None:
            return UNKNOWN
        try:
            state = await self._call(self.gateway_state)
        except Exception:  # noqa: BLE001 - an unknown state is shown as such
            return UNKNOWN
        return state if state in (UP, DOWN) else UNKNOWN

    async def current(self) -> Readiness:
        """The last answer; refreshed here only when no refresher runs and it is stale."""
        if self._task is None and self.clock() - self._last.at >= self.interval_s:
            return await self.refresh()
        return self._last

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        snapshot = await self.current()
        return self.ready_in(snapshot), snapshot.checks

    def ready_in(self, snapshot: Readiness) -> bool:
        return self.started and not self.stopping and snapshot.ready


class MetricsText:
    """The Prometheus exposition of a registry, rendered at most once per `ttl_s`."""

    def __init__(
        self, registry: CollectorRegistry, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.clock = clock
        self._text = b""
        self._at = float("-inf")
        self.renderings = 0

    def render(self) -> bytes:
        # Rendering is synchronous, so concurrent scrapers on this event loop can only ever
        # find a fresh text or make the one rendering the others then share.
        now = self.clock()
        if now - self._at >= self.ttl_s:
            self._text = generate_latest(self.registry)
            self._at = now
            self.renderings += 1
        return self._text


# The probe answers, built here for both ways in: the routes below and `ProbeAnswers`.
def _startup_response(started: bool) -> Response:
    if started:
        return _liveness_response()
    return JSONResponse({"status": "STARTING"}, status_code=503)


def _liveness_response() -> Response:
    return JSONResponse({"status": UP})


def _readiness_response(ready: bool, checks: dict[str, str]) -> Response:
    return JSONResponse({"status": UP if ready else DOWN, "checks": checks}, status_code=200 if ready else 503)


def _scrape_response(text: bytes) -> Response:
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def probe_routes(health: Health, metrics: MetricsText) -> list[Route]:
    async def startup(_: Request) -> Response:
        return _startup_response(health.started)

    async def liveness(_: Request) -> Response:
        return _liveness_response()

    async def readiness(_: Request) -> Response:
        return _readiness_response(*await health.readiness())

    async def scrape(_: Request) -> Response:
        return _scrape_response(metrics.render())

    return [
        Route("/healthz/startup", startup, methods=["GET"]),
        Route("/healthz/liveness", liveness, methods=["GET"]),
        Route("/healthz", liveness, methods=["GET"]),
        Route("/healthz/readiness", readiness, methods=["GET"]),
        Route("/healthz/ready", readiness, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
_NOSNIFF = (b"x-content-type-options", b"nosniff")  # what the edge adds to these answers


def _answer(response: Response) -> Answer:
    return response.status_code, [*response.raw_headers, _NOSNIFF], bytes(response.body)


class ProbeAnswers:
    """The routes of `probe_routes`, answered in front of the router with the same bytes as
    they are behind the edge, built by the same responses once per change (readiness, metrics)
    or once (liveness, startup). Each client address is paced by `pacer` (see PROBE_RATE).

    `handles(scope)` says which requests: GET or HEAD of those paths without a declared body
    (a body is the edge's to refuse). `answer(scope)` waits for the client's slot, then gives
    the answer."""

    def __init__(
        self,
        health: Health,
        metrics: MetricsText,
        pacer: Pacer | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.pacer = pacer or Pacer(PROBE_RATE, PROBE_BURST, max_wait=PROBE_MAX_WAIT_S)
        self.sleep = sleep
        self._up = _answer(_startup_response(True))
        self._starting = _answer(_startup_response(False))
        self._ready: tuple[Readiness, bool, Answer] | None = None
        self._scrape: tuple[bytes, Answer] | None = None
        self._paths: dict[str, Callable[[], Awaitable[Answer]]] = {
            "/healthz/startup": self.startup,
            "/healthz/liveness": self.liveness,
            "/healthz": self.liveness,
            "/healthz/readiness": self.readiness,
            "/healthz/ready": self.readiness,
            "/metrics": self.scrape,
        }

    def handles(self, scope: Scope) -> bool:
        if scope["path"] not in self._paths or scope["method"] not in ("GET", "HEAD"):
            return False
        return all(name != b"content-length" or value == b"0" for name, value in scope["headers"])

    async def answer(self, scope: Scope) -> Answer:
        client = scope.get("client")
        wait = self.pacer.delay(client[0] if client else "")
        if wait > 0:
            await self.sleep(wait)
        return await self._paths[scope["path"]]()

    async def startup(self) -> Answer:
        return self._up if self.health.started else self._starting

    async def liveness(self) -> Answer:
        return self._up

    async def readiness(self) -> Answer:
        snapshot = await self.health.current()
        ready = self.health.ready_in(snapshot)
        cached = self._ready
        if cached is None or cached[0] is not snapshot or cached[1] != ready:
            cached = self._ready = (snapshot, ready, _answer(_readiness_response(ready, snapshot.checks)))
        return cached[2]

    async def scrape(self) -> Answer:
        text = self.metrics.render()
        cached = self._scrape
        if cached is None or cached[0] is not text:
            cached = self._scrape = (text, _answer(_scrape_response(text)))
        return cached[1]
