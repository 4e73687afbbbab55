#!/usr/bin/env python3
"""Benchmark the payment service end to end against the local PostgreSQL and RabbitMQ.

For every measured run the script starts a fresh service process configured only by
environment variables, waits for ``GET /healthz/readiness`` == 200 (start-up time),
drives it with ``bench/loadgen.py`` (N OrderStockConfirmedEvents, flooded or paced),
reads the peak RSS (VmHWM of the process and its children) and CPU time, stops it with
SIGTERM and prints one JSON summary on stdout. With ``--compare`` the same load also
drives the hand-written baseline pipeline; ``--repeat N`` runs N rounds, service and
baseline alternately, and reports medians, spreads and ratios of medians.

Scenarios (explicit --n/--concurrency/--delay-ms/--rate override the presets):

  flood          5000 orders, 0 ms gateway, CONSUMER_CONCURRENCY=64
  gateway-100ms  2000 orders, 100 ms gateway, CONSUMER_CONCURRENCY=16
  paced          --rate orders/s (default: 80% of the baseline's median flood throughput,
                 measured first), 0 ms gateway, concurrency 64; input queue growth
  pollers        paced (50% of the baseline's flood throughput), the service without and
                 with --pollers HTTP pollers of /healthz/readiness and /metrics
  startup        start/stop each target --repeat times (3); time to readiness and RSS
  scaling        flood 5000 then 40000 (fresh process each); throughput/p99/RSS ratios
  all            every scenario above

Exit status: 0 when every run got one valid outcome per order, 1 otherwise, 2 on a
setup error (service did not start, broker/database unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aio_pika
import asyncpg

from infra import SetupError, tcp_reachable
from outcome_check import iso_now
from scenarios import (
    SCENARIOS,
    isolated_names,
    scenario_load,
    scenario_paced,
    scenario_scaling,
    scenario_startup,
    variants_of,
)
from targets import DEFAULT_CANCEL_QUEUE, DEFAULT_EXCHANGE, DEFAULT_QUEUE, REPO

VERSION = "2"


def write_json(args: argparse.Namespace, summary: dict) -> None:
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")


async def run_all(args: argparse.Namespace, summary: dict) -> dict:
    """Every wanted scenario; the JSON file is rewritten after each, so an aborted run keeps
    the scenarios it finished."""
    wanted = args.scenarios
    if len(wanted) > 1 and any(getattr(args, k) is not None for k in ("n", "concurrency", "delay_ms")):
        raise SetupError("several scenarios run their presets; --n/--concurrency/--delay-ms apply to one scenario")
    ctx: dict = {}
    summary.update(
        {
            "bench": f"foodies-payment bench {VERSION}",
            "started_at": iso_now(),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg": os.getloadavg()},
            "scenario": args.scenario,
            "argv": sys.argv[1:],
            "repeat": args.repeat,
            "variants": sorted({v.name for s in wanted for v in variants_of(args, s)}),
            "results": {},
            "complete": False,
        }
    )
    for name in wanted:
        if name in ("paced", "pollers"):
            res = await scenario_paced(args, name, ctx)
        elif name == "startup":
            res = await scenario_startup(args, ctx)
        elif name == "scaling":
            res = await scenario_scaling(args, ctx)
        else:
            res = await scenario_load(args, name, ctx)
        summary["results"][name] = res
        write_json(args, summary)
    summary["complete"] = True
    summary["ok"] = all(_scenario_ok(res) for res in summary["results"].values())
    summary["finished_at"] = iso_now()
    summary["machine"]["load_avg_after"] = os.getloadavg()
    return summary


def _scenario_ok(res: dict) -> bool:
    if "legs" in res:
        return res["ok"]
    return all(res[name].get("ok", False) for name in res["variants"])


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=None, help="orders per run (scaling: the small leg)")
    p.add_argument("--n-large", type=int, default=None, help="scaling: the large leg (default 40000)")
    p.add_argument("--concurrency", type=int, default=None, help="CONSUMER_CONCURRENCY / baseline --prefetch")
    p.add_argument("--delay-ms", type=float, default=None, help="PAYMENT_DELAY_MS / baseline --gateway-delay-ms")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="orders/s; 0 = flood. paced default: --rate-fraction x the baseline's flood throughput",
    )
    p.add_argument("--rate-fraction", type=float, default=0.8)
    p.add_argument("--paced-seconds", type=float, default=15.0, help="paced: n = rate x this, unless --n")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds per scenario, the variants alternating in each (default 1; startup: 3 starts)",
    )
    p.add_argument(
        "--pollers",
        type=int,
        default=10,
        help="pollers: how many HTTP pollers of /healthz/readiness and /metrics run beside the service",
    )
    p.add_argument(
        "--pollers-rate-fraction",
        type=float,
        default=0.5,
        help="pollers: the rate as this fraction of the baseline's flood throughput (unless --rate)",
    )
    p.add_argument(
        "--poll-rate", type=float, default=0.0, help="requests/s per poller (default 0: as fast as the service answers)"
    )
    p.add_argument("--decline-fraction", type=float, default=0.0, help='fraction of orders with card "0000" (declined)')
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for outcomes after the last publish")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="unconfirmed publishes in flight (default 256; paced: 2 s worth of orders)",
    )


def _add_target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=["service", "baseline"],
        default="service",
        help="what to drive (default service); --compare drives both",
    )
    p.add_argument("--compare", action="store_true", help="also run the baseline and report ratios")
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
        help="also run the service as variant NAME with this extra environment (repeatable), e.g. "
        "proto:PYTHONPATH=/path/to/a/prototype; ratios NAME/service",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=REPO.parent / "shared" / "bench" / "baseline_pipeline.py",
        help="the hand-written baseline pipeline script",
    )
    p.add_argument(
        "--db-url",
        default="postgresql://root@127.0.0.1:5432/payments_bench",
        help="DB_URL given to the service (database created if missing)",
    )


def _add_service_options(p: argparse.ArgumentParser) -> None:
    """Where and how the service runs (broker, database, queues, process, environment)."""
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queue", default=DEFAULT_QUEUE, help="RABBITMQ_CONSUME_QUEUE for the service")
    p.add_argument("--cancel-queue", default=DEFAULT_CANCEL_QUEUE, help="RABBITMQ_CANCEL_QUEUE for the service")
    p.add_argument("--exchange", default=DEFAULT_EXCHANGE, help="RABBITMQ_PUBLISH_EXCHANGE for the service")
    p.add_argument(
        "--isolated", action="store_true", help="service only: use a private exchange and queues, deleted afterwards"
    )
    p.add_argument("--port", type=int, default=None, help="service HTTP port (default: a free port)")
    p.add_argument(
        "--service-cmd",
        default=None,
        help="command starting the service (default: payment-service next to this python)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every service variant (repeatable)",
    )
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL for the service")
    p.add_argument(
        "--truncate",
        action="append",
        default=None,
        metavar="TABLE",
        help="tables emptied before each service start (default: payments)",
    )
    p.add_argument("--keep-data", action="store_true", help="do not truncate tables before a run")
    p.add_argument(
        "--fresh-db",
        action="store_true",
        help="startup: drop and recreate the database before the first start (cold migrations)",
    )
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=30.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scenario", default="flood", help=f"one of {', '.join(SCENARIOS)}, several separated by commas, or all"
    )
    _add_load_options(p)
    _add_target_options(p)
    _add_service_options(p)
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the target with py-spy during the load; top frames go into the summary "
        "(adds CPU load: do not compare throughput of profiled runs)",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--work-dir", default=str(REPO / ".bench"), help="service logs go here")
    p.add_argument("--json-out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    args.truncate = args.truncate or ["payments"]
    args.scenarios = SCENARIOS if args.scenario == "all" else args.scenario.split(",")
    if unknown := [s for s in args.scenarios if s not in SCENARIOS]:
        p.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)} or all")
    args.baseline = args.baseline.resolve()
    if args.compare and args.target != "service":
        p.error("--compare drives both targets; do not combine it with --target baseline")
    if args.isolated:
        isolated_names(args)
    if (args.compare or args.target == "baseline") and not args.baseline.exists():
        p.error(f"baseline script not found: {args.baseline} (use --baseline PATH)")
    for k in ("n", "n_large", "concurrency", "repeat"):
        v = getattr(args, k)
        if v is not None and v <= 0:
            p.error(f"--{k.replace('_', '-')} must be positive")
    if args.pollers < 0 or args.poll_rate < 0:
        p.error("--pollers and --poll-rate must not be negative")
    if any("=" not in kv for kv in args.env):
        p.error("--env takes KEY=VALUE")
    args.candidates = []
    for spec in args.candidate:
        name, _, pairs = spec.partition(":")
        kvs = [kv for kv in pairs.split(",") if kv]
        if not name or name in ("service", "baseline", "service+pollers") or any("=" not in kv for kv in kvs):
            p.error(f"--candidate takes NAME:KEY=VALUE[,KEY=VALUE...] with a new NAME: {spec!r}")
        args.candidates.append((name, dict(kv.split("=", 1) for kv in kvs)))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for host, port, what in (("127.0.0.1", 5672, "RabbitMQ"), ("127.0.0.1", 5432, "PostgreSQL")):
        if not tcp_reachable(host, port):
            print(f"bench: {what} is not reachable on {host}:{port}", file=sys.stderr)
            return 2
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    summary: dict = {}
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run_all(args, summary))
    except SetupError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError, RuntimeError) as e:
        # e.g. the broker went away under the run: the finished scenarios stay in the JSON file
        print(f"bench: aborted: {type(e).__name__}: {e}", file=sys.stderr)
        if summary.get("results"):
            summary["aborted"] = f"{type(e).__name__}: {e}"
            write_json(args, summary)
        return 2
    write_json(args, summary)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
