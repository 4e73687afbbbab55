"""The probes and the metrics scrape answered in front of the router: the same bytes as the
routed answers, each client address paced (delayed, never refused), and their access lines
dropped before they reach the log sink."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry, Counter

from app.asgi import PaymentApp
from app.http.probes import PROBE_MAX_WAIT_S, Health, MetricsText, ProbeAnswers
from app.http.ratelimit import Pacer
from app.observability.logs import ACCESS_LOGGER, QuietAccess, quiet_probe_access
from tests.http_fakes import always_up, client_of, http_app

PATHS = ("/healthz/startup", "/healthz/liveness", "/healthz", "/healthz/readiness", "/healthz/ready", "/metrics")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scope(path: str, method: str = "GET", client: str = "10.0.0.1", headers: Any = ()) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"payment"), *headers],
        "client": (client, 5000),
        "server": ("payment", 8085),
    }


async def exchange(app: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The ASGI messages `app` sends for one request."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(request, receive, send)
    return sent


class Routed:
    """The routed HTTP app, counting the requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


def payment_app(health: Health, registry: CollectorRegistry, pacer: Pacer | None = None) -> tuple[PaymentApp, Routed]:
    metrics = SimpleNamespace(registry=registry)
    routed = Routed(http_app(health=health, metrics=metrics))
    app = PaymentApp(RabbitBroker(), asyncapi_path=None)
    app.http = routed
    app.probes = ProbeAnswers(health, MetricsText(registry))
    if pacer is not None:
        assert app.probes is not None
        app.probes.pacer = pacer
    return app, routed


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("payment_demo", "A demo counter.", ["outcome"], registry=registry).labels("ok").inc(3)
    return registry


@pytest.mark.parametrize("state", ["ready", "not started", "stopping", "database down", "never refreshed"])
async def test_the_fast_answers_are_the_routed_answers_byte_for_byte(state: str) -> None:
    async def down() -> bool:
        return False

    health = Health(database=down if state == "database down" else always_up, broker=always_up)
    registry = registry_with_a_counter()
    app, routed = payment_app(health, registry, pacer=Pacer(1000, 1000, max_wait=0))
    if state != "never refreshed":
        await health.refresh()
    health.started = state != "not started"  # http_app() marks it started
    health.stopping = state == "stopping"
    for path in PATHS:
        for method in ("GET", "HEAD"):
            before = routed.calls
            fast = await exchange(app, scope(path, method))
            assert routed.calls == before, (path, method)  # answered in front of the router
            assert fast == await exchange(routed.app, scope(path, method)), (state, path, method)
    statuses = {path: (await exchange(app, scope(path)))[0]["status"] for path in PATHS}
    ready = state in ("ready", "never refreshed")  # without a refresher a probe refreshes itself
    assert statuses["/healthz/readiness"] == statuses["/healthz/ready"] == (200 if ready else 503)
    assert statuses["/healthz/startup"] == (503 if state == "not started" else 200)


async def test_the_fast_answers_follow_readiness_and_the_metrics() -> None:
    health = Health(database=always_up, broker=always_up, interval_s=0)
    registry = registry_with_a_counter()
    app, _ = payment_app(health, registry, pacer=Pacer(1000, 1000, max_wait=0))
    app.probes.metrics.ttl_s = 0  # type: ignore[union-attr]
    health.started = True
    async with client_of(app) as client:
        assert (await client.get("/healthz/readiness")).json()["checks"]["database"] == "UP"
        health.database = None
        body = (await client.get("/healthz/readiness")).json()
        assert body["checks"]["database"] == "UNKNOWN"
        assert (await client.get("/healthz/readiness")).status_code == 503
        Counter("payment_later", "Registered later.", registry=registry).inc()
        scraped = await client.get("/metrics")
        assert "payment_later_total 1.0" in scraped.text
        assert "server" not in scraped.headers
        assert scraped.headers["x-content-type-options"] == "nosniff"


async def test_other_requests_go_through_the_edge_and_the_router() -> None:
    health = Health(database=always_up, broker=always_up)
    app, routed = payment_app(health, registry_with_a_counter())
    cases = [
        scope("/healthz/readiness", "POST"),
        scope("/healthz/", "GET"),
        scope("/metrics/", "GET"),
        scope("/healthz/readiness", "GET", headers=[(b"content-length", b"20000")]),  # the edge's 413
        scope("/payments/42"),
    ]
    for request in cases:
        before = routed.calls
        answer = await exchange(app, request)
        assert routed.calls == before + 1, request["path"]
        assert answer == await exchange(routed.app, request)
    assert (await exchange(app, scope("/healthz/readiness", headers=[(b"content-length", b"20000")])))[0][
        "status"
    ] == 413


async def test_a_failing_fast_answer_is_left_to_the_edge() -> None:
    health = Health(database=always_up, broker=always_up)
    app, routed = payment_app(health, registry_with_a_counter())

    async def broken() -> Any:
        raise RuntimeError("boom")

    health.current = broken  # type: ignore[method-assign]
    answer = await exchange(app, scope("/healthz/readiness"))
    assert routed.calls == 1
    assert answer[0]["status"] == 500
    assert answer[1]["body"] == b'{"error":"internal error","status":500}'


def test_pacing_lets_a_burst_through_then_books_one_slot_per_interval() -> None:
    clock = Clock()
    pacer = Pacer(rate=20, burst=40, max_wait=0.5, clock=clock)
    assert [pacer.delay("a") for _ in range(40)] == [0.0] * 40  # two seconds' worth at once
    assert pacer.delay("b") == 0.0  # another address has its own schedule
    waits = [pacer.delay("a") for _ in range(9)]  # nine more in flight: one slot every 50 ms
    assert waits == pytest.approx([0.05 * k for k in range(1, 10)])
    pacer.delay("a")  # the slot 0.5 s away, booked or not
    # The next slots are more than max_wait away: these requests wait max_wait and book nothing.
    assert [pacer.delay("a") for _ in range(5)] == [0.5] * 5
    clock.now += 0.5  # the slots in flight were taken
    assert pacer.delay("a") <= 0.05 + 1e-9


def test_a_sequential_poller_is_held_to_the_rate() -> None:
    clock = Clock()
    pacer = Pacer(rate=20, burst=40, max_wait=0.5, clock=clock)
    started, answered = clock.now, 0
    while clock.now - started < 10:  # a client in a tight loop: asks again as soon as answered
        clock.now += pacer.delay("poller") + 0.001
        answered += 1
    assert 40 + 20 * 9.5 <= answered <= 40 + 20 * 10 + 1  # the burst, then 20 a second


def test_ten_pollers_from_one_address_share_its_rate_and_none_waits_past_the_cap() -> None:
    clock = Clock()
    pacer = Pacer(rate=20, burst=40, max_wait=0.5, clock=clock)
    due = [clock.now] * 10  # when each poller sends its next request
    answered, longest = 0, 0.0
    while clock.now < 110:
        i = min(range(10), key=due.__getitem__)
        clock.now = due[i]
        wait = pacer.delay("127.0.0.1")
        longest = max(longest, wait)
        due[i] = clock.now + wait + 0.001
        answered += 1
    assert longest <= 0.5
    assert answered <= 40 + 20 * 10 + 10  # together: the burst, 20 a second, and the ten last in flight


def test_pacing_remembers_a_bounded_number_of_clients() -> None:
    clock = Clock()
    pacer = Pacer(rate=20, burst=40, max_wait=0.5, max_clients=100, clock=clock)
    for i in range(10_000):  # a flood of addresses
        pacer.delay(f"10.{i}")
    assert len(pacer) <= 100
    clock.now += 10  # everyone caught up with the clock: nothing is kept
    pacer.delay("c")
    assert len(pacer) == 1
    for _ in range(50):  # the burst and ten slots: its schedule runs 2.5 s ahead
        pacer.delay("eager")
    clock.now += 2.4  # not caught up yet: remembered, so no fresh burst of 40
    immediate = 0
    while pacer.delay("eager") == 0.0:
        immediate += 1
    assert immediate == 38
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(rate=0, burst=1, max_wait=0)


async def test_an_eager_client_is_delayed_never_refused() -> None:
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    health = Health(database=always_up, broker=always_up, clock=clock)
    app, routed = payment_app(health, registry_with_a_counter(), pacer=Pacer(20, 40, max_wait=0.5, clock=clock))
    assert app.probes is not None
    app.probes.sleep = sleep
    health.started = True
    statuses = [(await exchange(app, scope("/healthz/readiness")))[0]["status"] for _ in range(60)]
    assert statuses == [200] * 60
    assert slept == pytest.approx([0.05] * 20)  # the burst at once, then one slot every 50 ms
    assert (await exchange(app, scope("/metrics", client="10.9.9.9")))[0]["status"] == 200
    assert len(slept) == 20  # another address is not delayed
    assert routed.calls == 0
    assert PROBE_MAX_WAIT_S < 1  # kubelet's default probe timeout


def access_record(path: str) -> logging.LogRecord:
    args = ("10.0.0.1:5000", "GET", path, "1.1", 200)
    return logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)


def test_probe_access_lines_are_dropped_unless_debugging() -> None:
    quiet = QuietAccess()
    for path in ("/healthz/readiness", "/healthz", "/metrics", "/metrics?x=1", "/healthz/"):
        assert not quiet.filter(access_record(path)), path
    for path in ("/payments/1", "/docs", "/openapi.json", "/admin/dlq"):
        assert quiet.filter(access_record(path)), path
    assert quiet.filter(logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "odd", None, None))

    access = logging.getLogger(ACCESS_LOGGER)
    saved = list(access.filters)
    try:
        quiet_probe_access(debugging=False)
        quiet_probe_access(debugging=False)  # configure_logging may run more than once
        assert sum(isinstance(f, QuietAccess) for f in access.filters) == 1
        assert not access.filter(access_record("/healthz/readiness"))
        assert access.filter(access_record("/payments/1"))
        quiet_probe_access(debugging=True)  # at DEBUG the lines are written, demoted to DEBUG
        assert not any(isinstance(f, QuietAccess) for f in access.filters)
    finally:
        access.filters = saved
