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
import datetime as dt
import json
import math
import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika import ExchangeType
from aiormq.exceptions import DeliveryError, PublishError

try:  # optional, cheaper than the stdlib on a machine shared with the system under test
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(o: Any) -> bytes:
        return json.dumps(o, separators=(",", ":")).encode()


RK_IN = "order.stock-confirmed"
RK_OK = "payment.succeeded"
RK_FAIL = "payment.failed"
SUCCEEDED_KEYS = frozenset(
    {"eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"}
)
FAILED_KEYS = frozenset({"eventId", "orderId", "failureReason", "failureCode", "occurredAt"})
FAILURE_CODES = frozenset(
    {
        "INSUFFICIENT_FUNDS", "CARD_DECLINED", "CARD_EXPIRED", "INVALID_CARD",
        "FRAUD_SUSPECTED", "GATEWAY_ERROR", "TIMEOUT", "UNKNOWN",
    }
)
DECLINE_CARD = "0000"
OK_CARD = "4242"
_AMOUNT_RE = re.compile(r"^\d+\.\d{2}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


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


# --------------------------------------------------------------------- helpers
def percentile(sorted_vals: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def latency_summary(values_s: list[float]) -> dict:
    v = sorted(x * 1000.0 for x in values_s)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "count": len(v),
        "min": r(v[0]) if v else None,
        "p50": r(percentile(v, 50)),
        "p95": r(percentile(v, 95)),
        "p99": r(percentile(v, 99)),
        "max": r(v[-1]) if v else None,
        "mean": r(sum(v) / len(v)) if v else None,
    }


def iso_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_instant(obj: dict, key: str, errs: list[str]) -> None:
    v = obj.get(key)
    if not isinstance(v, str):
        errs.append(f"{key} is not a string")
        return
    try:
        t = dt.datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
    except ValueError:
        errs.append(f"{key} is not ISO-8601: {v!r}")
        return
    if t.tzinfo is None or not v.endswith("Z"):
        errs.append(f"{key} is not a UTC instant ending in Z: {v!r}")


def check_outcome(routing_key: str, body: bytes) -> tuple[dict | None, list[str]]:
    """Validate one outcome against the contract; returns (object or None, errors)."""
    try:
        obj = _loads(body)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a schema error
        return None, [f"invalid JSON: {e}"]
    if not isinstance(obj, dict):
        return None, ["body is not a JSON object"]
    if routing_key == RK_OK:
        expected = SUCCEEDED_KEYS
    elif routing_key == RK_FAIL:
        expected = FAILED_KEYS
    else:
        return obj, [f"unexpected routing key {routing_key!r}"]
    errs: list[str] = []
    keys = set(obj)
    if expected - keys:
        errs.append(f"missing keys {sorted(expected - keys)}")
    if keys - expected:
        errs.append(f"extra keys {sorted(keys - expected)}")
    if "eventId" in obj:
        try:
            if not isinstance(obj["eventId"], str):
                raise ValueError
            uuid.UUID(obj["eventId"])
        except ValueError:
            errs.append(f"eventId is not a UUID string: {obj['eventId']!r}")
    if "orderId" in obj and not _is_int(obj["orderId"]):
        errs.append(f"orderId is not an integer: {obj['orderId']!r}")
    if routing_key == RK_OK:
        if "paymentId" in obj and not _is_int(obj["paymentId"]):
            errs.append(f"paymentId is not an integer: {obj['paymentId']!r}")
        t = obj.get("transactionId")
        if "transactionId" in obj and (not isinstance(t, str) or not t.startswith("txn_") or len(t) <= 4):
            errs.append(f"transactionId is not 'txn_<id>': {t!r}")
        a = obj.get("amount")
        if "amount" in obj and (not isinstance(a, str) or not _AMOUNT_RE.match(a)):
            errs.append(f"amount is not a 2-decimal string: {a!r}")
        c = obj.get("currency")
        if "currency" in obj and (not isinstance(c, str) or not _CURRENCY_RE.match(c)):
            errs.append(f"currency is not three upper-case letters: {c!r}")
        if "processedAt" in obj:
            _check_instant(obj, "processedAt", errs)
    else:
        r = obj.get("failureReason")
        if "failureReason" in obj and (not isinstance(r, str) or not r):
            errs.append(f"failureReason is not a non-empty string: {r!r}")
        c = obj.get("failureCode")
        if "failureCode" in obj and c not in FAILURE_CODES:
            errs.append(f"failureCode is not a contract code: {c!r}")
        if "occurredAt" in obj:
            _check_instant(obj, "occurredAt", errs)
    return obj, errs


def build_events(cfg: LoadConfig, base: int, run_id: str) -> tuple[list[bytes], list[str], set[int]]:
    rnd = random.Random(cfg.seed)
    n_decline = round(cfg.n * cfg.decline_fraction)
    declines = set(rnd.sample(range(cfg.n), n_decline)) if n_decline else set()
    occurred = iso_now()
    bodies: list[bytes] = []
    amounts: list[str] = []
    for i in range(cfg.n):
        cents = 1000 + rnd.randrange(99000)  # 10.00 .. 999.99
        amount = f"{cents // 100}.{cents % 100:02d}"
        amounts.append(amount)
        bodies.append(
            _dumps(
                {
                    "eventId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                    "orderId": base + i,
                    "buyerId": f"bench-user-{rnd.randrange(1000)}",
                    "totalAmount": amount,
                    "currency": cfg.currency,
                    "paymentMethod": {
                        "type": "CREDIT_CARD",
                        "cardLastFour": DECLINE_CARD if i in declines else OK_CARD,
                        "cardBrand": "VISA",
                        "cardHolderName": "Bench Buyer",
                        "expirationMonth": 12,
                        "expirationYear": 2030,
                    },
                    "occurredAt": occurred,
                }
            )
        )
    return bodies, amounts, declines


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
            idx = _loads(body)["orderId"] - self.base
        except Exception:  # noqa: BLE001 - checked later in analyse()
            return
        if _is_int(idx) and 0 <= idx < self.cfg.n and idx not in self.first_rx:
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
                    bodies[i], exchange=cfg.exchange, routing_key=RK_IN, properties=props[i],
                    mandatory=True, timeout=cfg.timeout_s,
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
        bodies, amounts, declines = build_events(cfg, self.base, self.run_id)
        # persistent, no content-type, unique message id (maps a Basic.Return back to its publish)
        props = [
            aiormq.spec.Basic.Properties(delivery_mode=2, message_id=f"bench-{self.run_id}-{i}")
            for i in range(cfg.n)
        ]
        rq_name = f"bench.results.{self.run_id}"
        # Two connections: consuming outcomes must not be stalled by publisher flow control.
        rx = await aio_pika.connect(cfg.amqp_url, client_properties={"connection_name": f"bench-rx-{self.run_id}"})
        tx = await aio_pika.connect(cfg.amqp_url, client_properties={"connection_name": f"bench-tx-{self.run_id}"})
        rx.close_callbacks.add(self._on_close)
        tx.close_callbacks.add(self._on_close)
        sampler: asyncio.Task | None = None
        report: dict = {"run_id": self.run_id, "order_base": self.base, "started_at": iso_now()}
        try:
            rx_ch = await rx.channel()
            ex = await rx_ch.declare_exchange(cfg.exchange, ExchangeType.TOPIC, durable=True)
            rq = await rx_ch.declare_queue(rq_name, exclusive=True, auto_delete=True)
            await rq.bind(ex, RK_OK)
            await rq.bind(ex, RK_FAIL)
            rx_raw = await rx_ch.get_underlay_channel()
            await rx_raw.basic_consume(rq_name, self._on_outcome, no_ack=True)
            probe = await (await rx.channel()).get_underlay_channel()
            start = await probe.queue_declare(cfg.input_queue, passive=True)
            report["input_queue_at_start"] = {
                "messages": start.message_count, "consumers": start.consumer_count,
            }
            if not start.consumer_count:
                self.warnings.append(f"input queue {cfg.input_queue!r} has no consumer")
            tx_ch = await tx.channel(publisher_confirms=True, on_return_raises=True)
            tx_raw = await tx_ch.get_underlay_channel()

            cpu0 = time.process_time()
            self.t0 = time.perf_counter()
            sampler = asyncio.create_task(self._sample_depth(probe))
            workers = [
                asyncio.create_task(self._publisher(tx_raw, bodies, props))
                for _ in range(min(cfg.window, cfg.n))
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
            sampler.cancel()
            if cfg.linger_s > 0 and not self.lost.is_set():
                await asyncio.sleep(cfg.linger_s)
            cpu_s = time.process_time() - cpu0
        finally:
            self.closing = True
            if sampler is not None:
                sampler.cancel()
            for c in (tx, rx):
                try:
                    await c.close()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        return self._analyse(report, amounts, declines, t_pub_done, t_end, cpu_s)

    def _analyse(self, report: dict, amounts: list[str], declines: set[int], t_pub_done: float,
                 t_end: float, cpu_s: float) -> dict:
        cfg, n, base = self.cfg, self.cfg.n, self.base
        sent = [t for t in self.sent_at if t is not None]
        t_first_pub = min(sent) if sent else self.t0
        schema_errors, schema_samples = 0, []
        seen: Counter = Counter()
        outcomes: Counter = Counter()
        failure_codes: Counter = Counter()
        unexpected = mismatches = 0
        mismatch_samples: list[dict] = []
        for _t, rk, body in self.raw:
            obj, errs = check_outcome(rk, body)
            if errs:
                schema_errors += 1
                if len(schema_samples) < 5:
                    schema_samples.append(
                        {"routing_key": rk, "body": body.decode("utf-8", "replace")[:500], "errors": errs}
                    )
            oid = obj.get("orderId") if isinstance(obj, dict) else None
            idx = oid - base if _is_int(oid) else -1
            if not 0 <= idx < n:
                unexpected += 1
                continue
            seen[idx] += 1
            if seen[idx] > 1:
                continue
            outcomes["succeeded" if rk == RK_OK else "failed" if rk == RK_FAIL else rk] += 1
            if rk == RK_FAIL:
                failure_codes[str(obj.get("failureCode"))] += 1
            problem = None
            if idx in declines:
                if rk != RK_FAIL or obj.get("failureCode") != "CARD_DECLINED":
                    problem = {"expected": "payment.failed/CARD_DECLINED", "got": rk,
                               "failureCode": obj.get("failureCode")}
            elif rk != RK_OK:
                problem = {"expected": RK_OK, "got": rk, "failureCode": obj.get("failureCode")}
            elif obj.get("amount") != amounts[idx] or obj.get("currency") != cfg.currency:
                problem = {"expected_amount": amounts[idx], "got_amount": obj.get("amount"),
                           "got_currency": obj.get("currency")}
            if problem:
                mismatches += 1
                if len(mismatch_samples) < 5:
                    mismatch_samples.append({"orderId": oid, **problem})
        latencies = [self.first_rx[i] - self.sent_at[i] for i in self.first_rx if self.sent_at[i] is not None]
        last_rx = max(self.first_rx.values()) if self.first_rx else None
        window = (last_rx - t_first_pub) if last_rx else None
        missing = [base + i for i in range(n) if i not in self.first_rx]
        pub_window = t_pub_done - t_first_pub
        depth_pub = [p for p in self.depth if p[0] <= t_pub_done - self.t0]
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
                "outcomes": {"succeeded": outcomes.get("succeeded", 0), "failed": outcomes.get("failed", 0)},
                "failure_codes": dict(failure_codes),
                "missing": len(missing),
                "missing_sample": missing[:5],
                "duplicates": sum(c - 1 for c in seen.values() if c > 1),
                "unexpected_outcomes": unexpected,
                "schema_errors": schema_errors,
                "schema_error_samples": schema_samples,
                "outcome_mismatches": mismatches,
                "mismatch_samples": mismatch_samples,
                "window_s": round(window, 3) if window else None,
                "throughput": round(len(self.first_rx) / window, 1) if window else None,
                "latency_ms": latency_summary(latencies),
                "input_queue": {
                    "sample_interval_s": cfg.sample_interval_s,
                    "max_depth": max((d for _, d in self.depth), default=None),
                    "depth_at_publish_end": depth_pub[-1][1] if depth_pub else None,
                    "growth_per_s_while_publishing": (
                        round(s, 1) if (s := _slope(depth_pub)) is not None else None
                    ),
                    "samples_t_s_depth": _decimate(self.depth),
                },
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
                (self.sent_at[i] - (self.t0 + i / cfg.rate)) * 1000.0
                for i in range(n) if self.sent_at[i] is not None
            )
            report["publish_lag_ms"] = {"p99": round(percentile(lag, 99), 2), "max": round(lag[-1], 2)}
        return report


def all_arrived(report: dict) -> bool:
    """Every order got exactly one valid, expected outcome and every publish was confirmed."""
    return (
        report["missing"] == 0
        and report["schema_errors"] == 0
        and report["outcome_mismatches"] == 0
        and report["publish_returned_unroutable"] == 0
        and report["publish_nacked"] == 0
        and not report["publish_errors"]
        and not report["connection_lost"]
        and not report["target_exited"]
    )


async def run_load(cfg: LoadConfig, alive: Callable[[], bool] | None = None) -> dict:
    gen = LoadGen(cfg, alive)
    report = await gen.run()
    report["config"] = asdict(cfg) | {"order_base": gen.base}
    report["config"].pop("amqp_url", None)
    return report
