"""Probes and metrics stay cheap: readiness comes from a background refresher (a probe only
reads it), scrapes share one rendering per second; readiness follows database, RabbitMQ and
consumers, and shows the gateway without depending on it."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter

from app.http.probes import Health, MetricsText
from tests.http_fakes import client_of, http_app


class Pings:
    def __init__(self) -> None:
        self.calls = 0
        self.database = self.broker = self.consumers = True
        self.gateway = "UP"

    async def db(self) -> bool:
        self.calls += 1
        await asyncio.sleep(0.01)
        return self.database

    async def mq(self) -> bool:
        return self.broker

    def health(self, **options: float) -> Health:
        return Health(
            database=self.db,
            broker=self.mq,
            consumers_ok=lambda: self.consumers,
            gateway_state=lambda: self.gateway,
            **options,
        )


async def test_readiness_is_read_from_the_refresher_not_computed_per_request() -> None:
    pings = Pings()
    health = pings.health(interval_s=0.05)
    await health.start()
    try:
        async with client_of(http_app(health=health)) as client:
            answers = await asyncio.gather(*(client.get("/healthz/readiness") for _ in range(200)))
            assert {a.status_code for a in answers} == {200}
            assert answers[0].json() == {
                "status": "UP",
                "checks": {"database": "UP", "rabbitmq": "UP", "consumer": "UP", "gateway": "UP"},
            }
            assert pings.calls <= 3  # 200 probes, a handful of background checks

            pings.gateway = "DOWN"  # payments wait for the gateway: still ready, but shown
            await asyncio.sleep(0.15)
            body = (await client.get("/healthz/ready")).json()
            assert body["status"] == "UP"
            assert body["checks"]["gateway"] == "DOWN"

            for broken in ("database", "broker", "consumers"):
                setattr(pings, broken, False)
                await asyncio.sleep(0.15)
                response = await client.get("/healthz/readiness")
                assert response.status_code == 503, broken
                assert response.json()["status"] == "DOWN"
                setattr(pings, broken, True)
            await asyncio.sleep(0.15)
            assert (await client.get("/healthz/readiness")).status_code == 200

            health.stopping = True  # read at once, not at the next refresh
            assert (await client.get("/healthz/readiness")).status_code == 503
    finally:
        await health.stop()
    assert health._task is None


async def test_start_does_not_reuse_a_refresh_begun_before_the_service_was_ready() -> None:
    pings = Pings()
    pings.consumers = False  # a probe arrives while the consumers are not attached yet
    health = pings.health(interval_s=60.0)
    early = asyncio.create_task(health.refresh())
    await asyncio.sleep(0.005)  # the early refresh has read the consumers' state (the database check takes 10 ms)
    pings.consumers = True
    health.started = True
    await health.start()
    try:
        assert not (await early).ready
        assert (await health.current()).ready  # at once, not a refresh interval later
    finally:
        await health.stop()


async def test_a_hanging_check_is_down_after_its_timeout() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    health = Health(database=hangs, broker=hangs, timeout_s=0.05)
    health.started = True
    started = time.monotonic()
    ready, checks = await health.readiness()
    assert time.monotonic() - started < 1
    assert not ready
    assert checks == {"database": "DOWN", "rabbitmq": "DOWN", "consumer": "UNKNOWN", "gateway": "UNKNOWN"}


async def test_without_a_refresher_concurrent_probes_share_one_refresh() -> None:
    pings = Pings()
    health = pings.health(interval_s=10)
    health.started = True
    results = await asyncio.gather(*(health.readiness() for _ in range(100)))
    assert all(ready for ready, _ in results)
    assert pings.calls == 1
    assert health.refreshes == 1
    assert not (await Health().readiness())[0]  # not started, nothing wired: not ready


async def test_startup_and_liveness() -> None:
    health = Health()
    app = http_app(health=health)
    health.started = False
    async with client_of(app) as client:
        assert (await client.get("/healthz/startup")).status_code == 503
        assert (await client.get("/healthz/liveness")).json() == {"status": "UP"}
        health.started = True
        assert (await client.get("/healthz/startup")).json() == {"status": "UP"}


def test_metrics_are_rendered_at_most_once_per_ttl() -> None:
    registry = CollectorRegistry()
    counter = Counter("demo", "A demo counter.", registry=registry)
    now = [0.0]
    text = MetricsText(registry, ttl_s=1.0, clock=lambda: now[0])
    first = text.render()
    counter.inc()
    assert [text.render() for _ in range(100)] == [first] * 100
    assert text.renderings == 1
    now[0] += 1.0
    assert b"demo_total 1.0" in text.render()
    assert text.renderings == 2


async def test_concurrent_scrapers_cost_one_rendering() -> None:
    from app.observability.metrics import PaymentMetrics

    metrics = PaymentMetrics()
    async with client_of(http_app(metrics=metrics)) as client:
        answers = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert "payment_processed" in answers[0].text
    assert answers[0].headers["content-type"].startswith("text/plain")
