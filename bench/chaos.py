#!/usr/bin/env python3
"""Chaos run: three replicas of the real `payment-service` against the fake HTTP gateway, thousands of orders with
every test card and cancellations at random moments, while replicas are killed with SIGKILL, RabbitMQ is stopped and
started, PostgreSQL is restarted and the gateway goes down for 20 s; then an audit from the outside (gateway, database,
published events, parking lots). Prints the counts as JSON on stdout and a summary on stderr.

    .venv/bin/python bench/chaos.py                                    # everything (restarts the shared servers!)
    .venv/bin/python bench/chaos.py --orders 300 --no-broker-restart --no-db-restart

Exit status: 0 when the audit is clean, 1 on any violation, 2 when the run could not be set up. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg

from chaos_audit import audit
from chaos_bus import CancelWatch, ChaosBus, settle
from chaos_cluster import REPO, FakeGateway, Replicas, Vhost, restart_broker, restart_postgres
from chaos_plan import POISON, Order, make_orders, timeline

API_KEY = "sk_test_chaos_" + uuid.uuid4().hex[:12]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=5000, help="orders to send (default %(default)s)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds over which they are sent (%(default)s)")
    p.add_argument("--cancel-share", type=float, default=0.10, help="share of orders cancelled (%(default)s)")
    p.add_argument("--special-share", type=float, default=0.005, help="share of each special test card (%(default)s)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--seed", type=int, default=None, help="random seed (printed; repeat a run's plan with it)")
    p.add_argument("--no-kill", action="store_true", help="no kill -9 of replicas")
    p.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills (%(default)s)")
    p.add_argument("--restart-after", type=float, default=1.0, help="a dead replica is restarted after (%(default)s)")
    p.add_argument("--no-outage", action="store_true", help="no gateway outage")
    p.add_argument("--outage-seconds", type=float, default=20.0)
    p.add_argument("--no-broker-restart", action="store_true", help="no rabbitmqctl stop_app/start_app")
    p.add_argument("--broker-down", type=float, default=5.0, help="seconds between stop_app and start_app")
    p.add_argument("--no-db-restart", action="store_true", help="no PostgreSQL restart")
    p.add_argument("--db-down", type=float, default=3.0, help="seconds PostgreSQL stays stopped")
    p.add_argument("--gateway-latency-ms", type=int, default=100, help="latency of every gateway call (%(default)s)")
    p.add_argument("--gateway-timeout-ms", type=int, default=2000, help="the replicas' attempt timeout (%(default)s)")
    p.add_argument("--settle-timeout", type=float, default=180.0, help="bound of the wait for quiescence")
    p.add_argument("--db-url", default="postgresql://root@127.0.0.1:5432/payments_chaos")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--keep-data", action="store_true", help="do not empty the payments table first")
    p.add_argument("--work-dir", type=Path, default=REPO / ".chaos", help="logs of the replicas and the fake")
    p.add_argument("--json-out", type=Path, help="also write the JSON report here")
    p.add_argument("--gateway-audit-out", type=Path, help="write the fake gateway's raw audit view here")
    return p


def lease_seconds(timeout_ms: int) -> float:
    """A little above the longest charge: three attempts and two backoff pauses of at most 200 ms."""
    return round(3 * timeout_ms / 1000 + 0.4 + 2.0, 1)


def service_env(args: argparse.Namespace, vhost: str, gateway_url: str) -> dict[str, str]:
    """The replicas' settings: short leases and sweeps so that a killed replica's work is taken over within seconds,
    a gateway timeout short enough that card 6666 fails within seconds."""
    db, mq = urlsplit(args.db_url), urlsplit(args.amqp_url)
    return {
        "HOST": "127.0.0.1",
        "DB_URL": args.db_url,
        "DB_USERNAME": db.username or "root",
        **({"DB_PASSWORD": db.password} if db.password else {}),
        "DB_POOL_SIZE": "5",
        "RABBITMQ_HOST": mq.hostname or "127.0.0.1",
        "RABBITMQ_PORT": str(mq.port or 5672),
        "RABBITMQ_USERNAME": mq.username or "guest",
        "RABBITMQ_PASSWORD": mq.password or "guest",
        "RABBITMQ_VHOST": vhost,
        "PAYMENT_GATEWAY": "http",
        "PAYMENT_GATEWAY_URL": gateway_url,
        "PAYMENT_GATEWAY_API_KEY": API_KEY,
        "PAYMENT_GATEWAY_TIMEOUT_MS": str(args.gateway_timeout_ms),
        "PAYMENT_RETRY_BASE_DELAY_MS": "50",
        "PAYMENT_RETRY_MAX_DELAY_MS": "200",
        "PAYMENT_LEASE_SECONDS": str(lease_seconds(args.gateway_timeout_ms)),
        "RECONCILE_INTERVAL_SECONDS": "2",
        "PAYMENT_CIRCUIT_OPEN_SECONDS": "2",
        "PAYMENT_MAX_WAIT_SECONDS": "900",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }


async def prepare_database(url: str, keep: bool) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    if not keep:
        db = await asyncpg.connect(url)
        try:
            if await db.fetchval("SELECT to_regclass('payments') IS NOT NULL"):
                await db.execute("TRUNCATE payments")
        finally:
            await db.close()


async def send_all(bus: ChaosBus, sends: list[Any], orders: dict[int, Any], started: float) -> None:
    """Publish the timeline on time (late after a broker outage: then as fast as the broker takes them)."""
    for send in sends:
        wait = started + send.at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        body = send.body
        if send.order_id is not None:
            order = orders[send.order_id]
            body = order.stock_confirmed() if send.role == "stock_confirmed" else order.cancelled()
        await bus.send(send.role, body)


async def disrupt(args: argparse.Namespace, replicas: Replicas, gateway: FakeGateway, rng: random.Random) -> dict:
    """The disruptions of the run, on a schedule relative to the publishing period; returns what happened."""
    span, done, report = args.duration, {}, {"kills": 0}

    async def at(fraction: float, name: str, action: Any) -> None:
        await asyncio.sleep(span * fraction)
        log(f"{name} begins")
        done[name] = await action()
        log(f"{name} done: {json.dumps(done[name])[:200]}")

    async def outage() -> dict:
        await gateway.control(outage_seconds=args.outage_seconds)
        await asyncio.sleep(args.outage_seconds)
        return {"seconds": args.outage_seconds}

    tasks = []
    if not args.no_outage:
        tasks.append(at(0.2, "gateway_outage", outage))
    if not args.no_broker_restart:
        tasks.append(at(0.45, "broker_restart", lambda: restart_broker(args.broker_down)))
    if not args.no_db_restart:
        port = urlsplit(args.db_url).port or 5432
        tasks.append(at(0.7, "db_restart", lambda: restart_postgres(port, args.db_down)))
    killing = asyncio.create_task(kill_loop(args, replicas, rng, span + 5)) if not args.no_kill else None
    await asyncio.gather(*tasks)
    if killing is not None:
        report["kills"] = await killing
    return {**report, **done}


async def kill_loop(args: argparse.Namespace, replicas: Replicas, rng: random.Random, until_s: float) -> int:
    end = time.monotonic() + until_s
    while time.monotonic() + args.kill_every < end:
        await asyncio.sleep(args.kill_every * rng.uniform(0.5, 1.5))
        victim = replicas.kill_one(rng)
        log(f"kill -9 {victim}")
    return replicas.kills


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    orders = make_orders(args.orders, args.duration, args.cancel_share, args.special_share, rng)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for old in args.work_dir.glob("*.log"):  # the logs of the latest run only
        old.unlink()
    vhost = Vhost(f"chaos-{uuid.uuid4().hex[:8]}", urlsplit(args.amqp_url).username or "guest")
    gateway = FakeGateway(API_KEY, args.work_dir)
    await prepare_database(args.db_url, args.keep_data)
    await vhost.create()
    replicas: Replicas | None = None
    bus: ChaosBus | None = None
    try:
        await gateway.start()
        await gateway.control(latency_ms=args.gateway_latency_ms)
        replicas = Replicas(args.replicas, service_env(args, vhost.name, gateway.url), args.work_dir)
        await replicas.start()
        bus = await ChaosBus.open(args.amqp_url.rstrip("/") + "/" + quote(vhost.name, safe=""))
        log(f"seed {seed}: {len(orders)} orders over {args.duration}s on vhost {vhost.name}")
        figures, disruptions, orders = await drive(args, orders, replicas, gateway, bus, rng)
        quiet = await settle(args.db_url, vhost, bus, orders, args.settle_timeout)
        rows = await bus.rows(args.db_url, [o.order_id for o in orders])
        seen = await gateway.audit()
        if args.gateway_audit_out:
            args.gateway_audit_out.write_text(json.dumps(seen))
        result = audit(orders, rows, seen, bus.events, _poison(), await bus.parked())
        if not quiet["quiescent"]:
            result["violations"]["not_quiescent"] = 1
            result["examples"]["not_quiescent"] = [json.dumps(quiet["last"])[:500]]
        figures |= {"seed": seed, "settle_s": quiet["seconds"], "unplanned_exits": dict(replicas.unplanned_exits)}
        figures["starts"] = {m.name: m.starts for m in replicas.members}
        return {"ok": not result["violations"], "figures": figures, "disruptions": disruptions, "audit": result}
    finally:
        if bus is not None:
            await bus.close()
        if replicas is not None:
            await replicas.stop()
        await gateway.process.stop(5)
        await vhost.delete()


async def drive(
    args: argparse.Namespace, orders: list[Order], replicas: Replicas, gateway: FakeGateway, bus: ChaosBus, rng: Any
) -> tuple[dict[str, Any], dict[str, Any], list[Order]]:
    """Send everything while the disruptions run; returns figures, what the disruptions did, and the orders as
    actually sent (a cancellation that never went out is taken off its order)."""
    sends = timeline(orders, args.duration, rng)
    watch = CancelWatch(args.db_url, bus, orders, rng)
    replicas.supervise(args.restart_after)
    started = time.monotonic()
    _, disruptions, _ = await asyncio.gather(
        send_all(bus, sends, {o.order_id: o for o in orders}, started),
        disrupt(args, replicas, gateway, rng),
        watch.run(until=started + args.duration + args.settle_timeout / 2),
    )
    publish_s = time.monotonic() - started
    ready = await replicas.wait_all_ready(120)
    log(f"chaos over after {publish_s:.0f}s (replicas ready: {ready}); waiting for quiescence")
    unsent = [o.order_id for o in orders if o.cancel in ("during", "after") and o.order_id not in watch.sent]
    orders = [replace(o, cancel=None) if o.order_id in unsent else o for o in orders]
    figures = {"chaos_s": round(publish_s, 1), "cancels_not_sent": len(unsent), "replicas_ready": ready}
    return figures, disruptions, orders


def _poison() -> dict[str, list[bytes]]:
    return {role: list(bodies) for role, bodies in POISON.items()}


def summary(report: dict[str, Any]) -> str:
    a, f = report["audit"], report["figures"]
    disruptions = {k: v.get("seconds") if isinstance(v, dict) else v for k, v in report["disruptions"].items()}
    lines = [
        f"orders {a['orders']} (cancelled {sum(a['cancellations_sent'].values())}), rows {a['rows']}",
        f"cancellation cases {a['cancel_cases']}; failure codes {a['failure_codes']}",
        f"gateway {a['gateway']}; published {a['published']}; parked {a['parked']}",
        f"disruptions {json.dumps(disruptions)}",
        f"chaos {f['chaos_s']}s, settle {f['settle_s']}s; replica starts {f['starts']}, "
        f"unplanned exits {f['unplanned_exits']}, cancellations not sent {f['cancels_not_sent']}",
        "AUDIT CLEAN" if report["ok"] else f"VIOLATIONS {a['violations']}",
    ]
    for kind, examples in a["examples"].items():
        lines += [f"  {kind}: {example}" for example in examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (RuntimeError, OSError, ValueError, asyncpg.PostgresError) as error:
        log(f"setup failed: {type(error).__name__}: {error}")
        return 2
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    print(summary(report), file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
