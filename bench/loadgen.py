"""Black-box load generator for the payment contract (used by ``run_bench.py``).

One run:

1. declares an exclusive, auto-delete result queue bound to ``payment.succeeded`` and
   ``payment.failed`` on the exchange (before anything is published);
2. pre-builds N ``OrderStockConfirmedEvent`` bodies (unique, time-based order ids; card
   ``4242``, or ``0000`` for an exact ``decline_fraction`` of them);
3. publishes them to ``order.stock-confirmed`` as persistent messages without a
   content-type (as the Kotlin publisher does), with publisher confirms and
   ``mandatory``, either flooded or paced at ``rate`` per second; a fixed pool of
   ``window`` publisher coroutines bounds the unconfirmed messages in flight;
4. samples the input queue depth every ``sample_interval_s`` while it runs;
5. waits for one outcome per order (``timeout_s`` after the last publish), lingers a
   moment to catch duplicates, and checks every outcome body against the contract.

Latency is per order: first outcome received minus its publish (one monotonic clock).
Throughput is distinct outcomes / (last first-outcome - first publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika import ExchangeType
from aiormq.exceptions import DeliveryError, PublishError

from outcome_check import (
    RK_FAIL,
    RK_IN,
    RK_OK,
    build_events,
    is_int,
    iso_now,
    latency_summary,
    loads,
    percentile,
    tally,
)


@dataclass
class LoadConfig:
    n: int
    rate: float = 0.0  # orders per second; 0 = flood
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "foodies"
    input_queue: str = "payment.stock-confirmed"
    window: int = 256  # unconfirmed publishes in flight
    timeout_s: float = 120.0  # wait for outcomes after the last publish
    linger_s: float = 0.5  # keep listening for duplicates after the last outcome
    decline_fraction: float = 0.0
    sample_interval_s: float = 0.1
    order_base: int | None = None
    currency: str = "USD"
    seed: int = 1


def _slope(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope (messages per second) of (time, depth) samples."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx <= 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def _decimate(points: list[tuple[float, int]], limit: int = 60) -> list[list[float]]:
    if len(points) > limit:
        step = len(points) / limit
        points = [points[int(k * step)] for k in range(limit)] + [points[-1]]
    return [[round(t, 2), d] for t, d in points]


# ------------------------------------------------------------------------- run
class LoadGen:
    def __init__(self, cfg: LoadConfig, alive: Callable[[], bool] | None = None):
        if cfg.n <= 0 or cfg.rate < 0 or cfg.window <= 0 or not 0.0 <= cfg.decline_fraction <= 1.0:
            raise ValueError("need n > 0, rate >= 0, window > 0 and 0 <= decline_fraction <= 1")
        self.cfg = cfg
        self.alive = alive  # stops waiting early when the process under test died
        self.target_exited = False
        self.run_id = secrets.token_hex(4)
        # time-based so that reruns against the same database never collide
        self.base = cfg.order_base if cfg.order_base is not None else time.time_ns() // 1000
        n = cfg.n
        self.sent_at: list[float | None] = [None] * n
        self.first_rx: dict[int, float] = {}
        self.raw: list[tuple[float, str, bytes]] = []
        self.done = asyncio.Event()
        self.lost = asyncio.Event()
        self.closing = False
        self.next_index = 0
        self.t0 = 0.0
        self.pub_ok = 0
        self.pub_returned = 0
        self.pub_nacked = 0
        self.pub_errors: Counter = Counter()
        self.depth: list[tuple[float, int]] = []
        self.warnings: list[str] = []

    # -- callbacks -----------------------------------------------------------
    async def _on_outcome(self, msg: aiormq.abc.DeliveredMessage) -> None:
        t = time.perf_counter()
        body = msg.body
        self.raw.append((t, msg.delivery.routing_key or "", body))
        try:
            idx = loads(body)["orderId"] - self.base
        except Exception:  # noqa: BLE001 - checked later in analyse()
            return
        if is_int(idx) and 0 <= idx < self.cfg.n and idx not in self.first_rx:
            self.first_rx[idx] = t
            if len(self.first_rx) == self.cfg.n:
                self.done.set()

    def _on_close(self, *args: Any) -> None:
        if not self.closing and not self.lost.is_set():
            self.warnings.append(f"AMQP connection lost: {args[1:] if len(args) > 1 else ''}")
            self.lost.set()

    # -- workers -------------------------------------------------------------
    async def _publisher(self, ch: aiormq.abc.AbstractChannel, bodies: list[bytes], props: list) -> None:
        cfg = self.cfg
        rate = cfg.rate
        while not self.lost.is_set():
            i = self.next_index
            if i >= cfg.n:
                return
            self.next_index = i + 1
            if rate > 0:
                delay = self.t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.sent_at[i] = time.perf_counter()
            try:
                await ch.basic_publish(
                    bodies[i],
                    exchange=cfg.exchange,
                    routing_key=RK_IN,
                    properties=props[i],
                    mandatory=True,
                    timeout=cfg.timeout_s,
                )
                self.pub_ok += 1
            except PublishError:
                self.pub_returned += 1
            except DeliveryError:
                self.pub_nacked += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                self.pub_errors[type(e).__name__] += 1

    async def _sample_depth(self, ch: aiormq.abc.AbstractChannel) -> None:
        sampling = True
        while True:
            if self.alive is not None and not self.alive():
                self.target_exited = True
                self.warnings.append("the process under test exited during the run")
                self.lost.set()
                return
            if sampling:
                try:
                    ok = await ch.queue_declare(self.cfg.input_queue, passive=True)
                    self.depth.append((time.perf_counter() - self.t0, ok.message_count or 0))
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - the queue vanished or the channel closed
                    self.warnings.append(f"queue depth sampling stopped: {type(e).__name__}: {e}")
                    sampling = False
            await asyncio.sleep(self.cfg.sample_interval_s)

    # -- main ----------------------------------------------------------------
    async def run(self) -> dict:
        cfg = self.cfg
        bodies, amounts, declines = build_events(cfg.n, self.base, cfg.decline_fraction, cfg.currency, cfg.seed)
        # persistent, no content-type, unique message id (maps a Basic.Return back to its publish)
        props = [
            aiormq.spec.Basic.Properties(delivery_mode=2, message_id=f"bench-{self.run_id}-{i}") for i in range(cfg.n)
        ]
        # Two connections: consuming outcomes must not be stalled by publisher flow control.
        rx = await aio_pika.connect(cfg.amqp_url, client_properties={"connection_name": f"bench-rx-{self.run_id}"})
        tx = await aio_pika.connect(cfg.amqp_url, client_properties={"connection_name": f"bench-tx-{self.run_id}"})
        rx.close_callbacks.add(self._on_close)
        tx.close_callbacks.add(self._on_close)
        report: dict = {"run_id": self.run_id, "order_base": self.base, "started_at": iso_now()}
        try:
            probe, tx_raw = await self._setup(rx, tx, report)
            t_pub_done, t_end, cpu_s = await self._drive(probe, tx_raw, bodies, props)
        finally:
            self.closing = True
            for c in (tx, rx):
                with contextlib.suppress(Exception):  # best effort on the way out
                    await c.close()
        return self._analyse(report, amounts, declines, t_pub_done, t_end, cpu_s)

    async def _setup(self, rx: Any, tx: Any, report: dict) -> tuple[Any, Any]:
        """The result queue and its consumer, the depth probe, the confirming publish channel."""
        cfg = self.cfg
        rq_name = f"bench.results.{self.run_id}"
        rx_ch = await rx.channel()
        ex = await rx_ch.declare_exchange(cfg.exchange, ExchangeType.TOPIC, durable=True)
        rq = await rx_ch.declare_queue(rq_name, exclusive=True, auto_delete=True)
        await rq.bind(ex, RK_OK)
        await rq.bind(ex, RK_FAIL)
        rx_raw = await rx_ch.get_underlay_channel()
        await rx_raw.basic_consume(rq_name, self._on_outcome, no_ack=True)
        probe = await (await rx.channel()).get_underlay_channel()
        start = await probe.queue_declare(cfg.input_queue, passive=True)
        report["input_queue_at_start"] = {"messages": start.message_count, "consumers": start.consumer_count}
        if not start.consumer_count:
            self.warnings.append(f"input queue {cfg.input_queue!r} has no consumer")
        tx_ch = await tx.channel(publisher_confirms=True, on_return_raises=True)
        return probe, await tx_ch.get_underlay_channel()

    async def _drive(self, probe: Any, tx_raw: Any, bodies: list[bytes], props: list) -> tuple[float, float, float]:
        """Publish everything, wait for the outcomes; (publishing done, end, generator CPU seconds)."""
        cfg = self.cfg
        cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        sampler = asyncio.create_task(self._sample_depth(probe))
        try:
            workers = [
                asyncio.create_task(self._publisher(tx_raw, bodies, props)) for _ in range(min(cfg.window, cfg.n))
            ]
            await asyncio.gather(*workers)
            t_pub_done = time.perf_counter()
            waiters = [asyncio.create_task(self.done.wait()), asyncio.create_task(self.lost.wait())]
            await asyncio.wait(waiters, timeout=cfg.timeout_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            t_end = time.perf_counter()
            if not self.done.is_set() and not self.lost.is_set():
                self.warnings.append(
                    f"timeout: {len(self.first_rx)}/{cfg.n} outcomes {cfg.timeout_s}s after the last publish"
                )
        finally:
            sampler.cancel()
        if cfg.linger_s > 0 and not self.lost.is_set():
            await asyncio.sleep(cfg.linger_s)
        return t_pub_done, t_end, time.process_time() - cpu0

    def _analyse(
        self, report: dict, amounts: list[str], declines: set[int], t_pub_done: float, t_end: float, cpu_s: float
    ) -> dict:
        cfg, n, base = self.cfg, self.cfg.n, self.base
        sent = [t for t in self.sent_at if t is not None]
        t_first_pub = min(sent) if sent else self.t0
        latencies = [self.first_rx[i] - self.sent_at[i] for i in self.first_rx if self.sent_at[i] is not None]
        last_rx = max(self.first_rx.values()) if self.first_rx else None
        window = (last_rx - t_first_pub) if last_rx else None
        missing = [base + i for i in range(n) if i not in self.first_rx]
        pub_window = t_pub_done - t_first_pub
        report.update(
            {
                "published": self.pub_ok,
                "publish_returned_unroutable": self.pub_returned,
                "publish_nacked": self.pub_nacked,
                "publish_errors": dict(self.pub_errors),
                "publish_duration_s": round(pub_window, 3),
                "publish_rate": round(self.pub_ok / pub_window, 1) if self.pub_ok and pub_window > 0 else None,
                "received": len(self.first_rx),
                "outcome_messages_total": len(self.raw),
                **tally(self.raw, base, amounts, declines, cfg.currency),
                "missing": len(missing),
                "missing_sample": missing[:5],
                "window_s": round(window, 3) if window else None,
                "throughput": round(len(self.first_rx) / window, 1) if window else None,
                "latency_ms": latency_summary(latencies),
                "input_queue": self._queue_report(t_pub_done),
                "timed_out": len(self.first_rx) < n and not self.lost.is_set(),
                "connection_lost": self.lost.is_set() and not self.target_exited,
                "target_exited": self.target_exited,
                "wait_s": round(t_end - self.t0, 3),
                "loadgen_cpu_s": round(cpu_s, 3),
                "warnings": self.warnings,
                "finished_at": iso_now(),
            }
        )
        if cfg.rate > 0 and sent:
            # how far the publisher fell behind its schedule (a saturated generator shows here)
            lag = sorted(
                (self.sent_at[i] - (self.t0 + i / cfg.rate)) * 1000.0 for i in range(n) if self.sent_at[i] is not None
            )
            report["publish_lag_ms"] = {"p99": round(percentile(lag, 99), 2), "max": round(lag[-1], 2)}
        return report

    def _queue_report(self, t_pub_done: float) -> dict:
        depth_pub = [p for p in self.depth if p[0] <= t_pub_done - self.t0]
        slope = _slope(depth_pub)
        return {
            "sample_interval_s": self.cfg.sample_interval_s,
            "max_depth": max((d for _, d in self.depth), default=None),
            "depth_at_publish_end": depth_pub[-1][1] if depth_pub else None,
            "growth_per_s_while_publishing": round(slope, 1) if slope is not None else None,
            "samples_t_s_depth": _decimate(self.depth),
        }


async def run_load(cfg: LoadConfig, alive: Callable[[], bool] | None = None) -> dict:
    gen = LoadGen(cfg, alive)
    report = await gen.run()
    report["config"] = asdict(cfg) | {"order_base": gen.base}
    report["config"].pop("amqp_url", None)
    return report
