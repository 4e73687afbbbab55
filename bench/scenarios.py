"""The scenarios: each runs its variants alternately (`--repeat` rounds: service, baseline,
service, baseline, ...; every run a fresh process) and sums them up (summary.py)."""

from __future__ import annotations

import argparse
import asyncio
import secrets

import aio_pika

from infra import Broker, SetupError, ensure_database, log
from one_run import measure
from proc_stats import memory_report
from summary import assemble, median_of, ratio, spread
from targets import ServiceTarget, Variant, make_target

PRESETS = {
    "flood": {"n": 5000, "concurrency": 64, "delay_ms": 0.0, "rate": 0.0},
    "gateway-100ms": {"n": 2000, "concurrency": 16, "delay_ms": 100.0, "rate": 0.0},
    "paced": {"n": None, "concurrency": 64, "delay_ms": 0.0, "rate": None},
    "pollers": {"n": None, "concurrency": 64, "delay_ms": 0.0, "rate": None},
    "startup": {"concurrency": 64, "delay_ms": 0.0},
    "scaling": {"n": 5000, "n_large": 40000, "concurrency": 64, "delay_ms": 0.0, "rate": 0.0},
}
SCENARIOS = ["flood", "gateway-100ms", "paced", "pollers", "startup", "scaling"]


def variants_of(args: argparse.Namespace, scenario: str) -> list[Variant]:
    """In the order of one round: service, candidates, baseline. `pollers`: each service variant
    without and then with the pollers (service, service+pollers, candidate, candidate+pollers...)."""
    out = []
    if args.compare or args.target == "service" or scenario == "pollers":
        out.append(Variant("service", "service"))
        out += [Variant(name, "service", env) for name, env in args.candidates]
    if scenario == "pollers":
        return [w for v in out for w in (v, Variant(f"{v.name}+pollers", "service", v.env, pollers=args.pollers))]
    if args.compare or args.target == "baseline":
        out.append(Variant("baseline", "baseline"))
    return out


def repeats(args: argparse.Namespace, scenario: str) -> int:
    """--repeat: rounds of every scenario; unset, startup starts 3 times and the others run once."""
    if args.repeat is not None:
        return args.repeat
    return 3 if scenario == "startup" else 1


def param(args: argparse.Namespace, preset: dict, key: str):
    v = getattr(args, key)
    return preset.get(key) if v is None else v


async def rounds(
    args: argparse.Namespace, label: str, variants: list[Variant], n: int, c: int, d: float, rate: float, count: int
) -> dict[str, list[dict]]:
    """`count` rounds; in each, every variant runs once, in order (A/B/A/B...)."""
    runs: dict[str, list[dict]] = {v.name: [] for v in variants}
    for i in range(count):
        for v in variants:
            run_label = f"{label}.r{i + 1}" if count > 1 else label
            runs[v.name].append(await _measure_once_more(args, v, run_label, n, c, d, rate))
    return runs


async def _measure_once_more(
    args: argparse.Namespace, v: Variant, label: str, n: int, c: int, d: float, rate: float
) -> dict:
    """A run that lost the broker under it (someone restarted it, or closed every connection)
    runs once more after a pause; a second loss ends the benchmark."""
    try:
        return await measure(args, v, label, n, c, d, rate)
    except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
        reason = f"{type(error).__name__}: {error}"
        log(args, f"{label}: {v.name} lost the broker ({reason}); running it again in 10 s")
        await asyncio.sleep(10)
        run = await measure(args, v, label, n, c, d, rate)
        run["run_again_after"] = reason
        return run


async def scenario_load(args: argparse.Namespace, name: str, ctx: dict) -> dict:
    preset = PRESETS[name]
    n, c, d = param(args, preset, "n"), param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    rate = (args.rate or 0.0) if args.scenarios == [name] else preset["rate"]
    config = {"n": n, "concurrency": c, "delay_ms": d, "rate": rate or None}
    if d:
        config["bound_per_s"] = round(c * 1000.0 / d, 1)  # concurrency / gateway delay: the ceiling
    runs = await rounds(args, name, variants_of(args, name), n, c, d, rate, repeats(args, name))
    ctx[name] = {"config": config, "runs": runs}
    return assemble(config, runs)


async def _paced_rate(args: argparse.Namespace, ctx: dict, fraction: float) -> tuple[float, str]:
    """--rate, or fraction x the baseline's median flood throughput (measured if needed)."""
    if args.rate:
        return args.rate, "--rate"
    base = ctx.get("flood", {}).get("runs", {}).get("baseline")
    if base is None and args.baseline.exists():
        log(args, "paced: measuring the baseline's flood throughput to set the rate")
        fp = PRESETS["flood"]
        calibration = await measure(
            args, Variant("baseline", "baseline"), "paced-calibration", fp["n"], fp["concurrency"], fp["delay_ms"], 0.0
        )
        ctx["paced-calibration"] = calibration
        base = [calibration]
    throughput = spread([r["throughput_per_s"] for r in base or []])
    if not throughput:
        raise SetupError("paced: give --rate (no baseline flood throughput available to derive it)")
    rate = round(fraction * throughput["median"], 1)
    return rate, f"{fraction:g} x baseline flood throughput {throughput['median']}/s (median)"


async def scenario_paced(args: argparse.Namespace, name: str, ctx: dict) -> dict:
    """`paced`: service and baseline at one rate. `pollers`: the service at one rate without and
    with HTTP pollers of its probes and metrics."""
    preset = PRESETS[name]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    fraction = args.rate_fraction if name == "paced" else args.pollers_rate_fraction
    rate, source = await _paced_rate(args, ctx, fraction)
    n = args.n or max(200, int(rate * args.paced_seconds))
    config = {"n": n, "concurrency": c, "delay_ms": d, "rate": rate, "rate_source": source}
    if name == "pollers":
        config.update(pollers=args.pollers, poll_rate_per_poller=args.poll_rate or "as fast as answered")
    runs = await rounds(args, name, variants_of(args, name), n, c, d, rate, repeats(args, name))
    for variant_runs in runs.values():
        for r in variant_runs:
            growth = r["input_queue"]["growth_per_s_while_publishing"] or 0
            r["keeps_up"] = bool(
                r["throughput_per_s"] and r["throughput_per_s"] >= 0.95 * rate and growth < 0.05 * rate
            )
    out = assemble(config, runs)
    if "paced-calibration" in ctx:
        out["baseline_flood_calibration"] = ctx["paced-calibration"]
    return out


async def _start_stop(args: argparse.Namespace, variant: Variant, c: int, d: float, i: int) -> dict:
    target = make_target(args, variant, c, d, f"startup.r{i + 1}")
    async with Broker(args.amqp_url) as broker:
        await broker.wait_no_consumer(target.queue)
        if variant.kind == "service" and args.fresh_db and i == 0:
            await ensure_database(target.db_url, drop=True)
        t = await target.start()
        mem = memory_report(target.proc.pid)
        stop = await target.stop()
        if isinstance(target, ServiceTarget) and args.isolated:
            await broker.delete([q for queue in target.queues() for q in (queue, f"{queue}.dlq")], target.exchange)
    log(args, f"startup: {variant.name} run {i + 1}: ready after {t:.3f}s, rss {mem['rss_now_mib']} MiB")
    return {
        "startup_s": round(t, 3),
        "rss_at_ready_mib": mem["rss_now_mib"],
        "peak_rss_mib": mem["peak_rss_mib"],
        "shutdown": stop,
    }


async def scenario_startup(args: argparse.Namespace, ctx: dict) -> dict:
    """Start and stop each variant --repeat times (alternately); time to ready and RSS then."""
    preset = PRESETS["startup"]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    count = repeats(args, "startup")
    variants = [v for v in variants_of(args, "startup") if not v.pollers]
    runs: dict[str, list[dict]] = {v.name: [] for v in variants}
    for i in range(count):
        for v in variants:
            runs[v.name].append(await _start_stop(args, v, c, d, i))
    out: dict = {"config": {"repeat": count, "concurrency": c, "delay_ms": d}, "repeat": count, "variants": list(runs)}
    for name, rs in runs.items():
        codes = sorted({r["shutdown"].get("exit_code") for r in rs} - {0})
        out[name] = {
            "target": variants[[v.name for v in variants].index(name)].kind,
            "variant": name,
            "ok": not codes,
            "repeat": count,
            "summary": {k: spread([r[k] for r in rs]) for k in ("startup_s", "rss_at_ready_mib", "peak_rss_mib")},
            "runs": rs,
        }
        if codes:
            out[name]["problems"] = [f"exit code {code} after SIGTERM" for code in codes]
    if "service" in out and "baseline" in out:
        out["ratios"] = {
            "service_over_baseline": {
                "startup_s": ratio(median_of(out, "service", "startup_s"), median_of(out, "baseline", "startup_s"))
            }
        }
    return out


async def scenario_scaling(args: argparse.Namespace, ctx: dict) -> dict:
    """Flood small, then large (fresh processes): how throughput, p99, RSS and CPU/order scale."""
    preset = PRESETS["scaling"]
    n_small, n_large = args.n or preset["n"], args.n_large or preset["n_large"]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    count = repeats(args, "scaling")
    variants = [v for v in variants_of(args, "scaling") if not v.pollers]
    flood = ctx.get("flood", {"config": {}, "runs": {}})
    fc = flood["config"]
    same = (fc.get("n"), fc.get("concurrency"), fc.get("delay_ms"), fc.get("rate")) == (n_small, c, d, None)
    if same and all(len(flood["runs"].get(v.name, [])) == count for v in variants):
        small = {v.name: flood["runs"][v.name] for v in variants}  # same configuration, fresh processes: reuse
    else:
        small = await rounds(args, f"scaling-{n_small}", variants, n_small, c, d, 0.0, count)
    large = await rounds(args, f"scaling-{n_large}", variants, n_large, c, d, 0.0, count)
    legs = {str(n_small): assemble({"n": n_small}, small), str(n_large): assemble({"n": n_large}, large)}
    out: dict = {
        "config": {"n_small": n_small, "n_large": n_large, "concurrency": c, "delay_ms": d},
        "repeat": count,
        "variants": [v.name for v in variants],
        "legs": legs,
    }
    s, g = legs[str(n_small)], legs[str(n_large)]
    out["large_over_small"] = {
        v.name: {
            m: ratio(median_of(g, v.name, m), median_of(s, v.name, m))
            for m in ("throughput_per_s", "p99_ms", "peak_rss_mib", "cpu_ms_per_order")
        }
        for v in variants
    }
    out["ok"] = all(leg[v.name]["ok"] for leg in legs.values() for v in variants)
    return out


def isolated_names(args: argparse.Namespace) -> None:
    """--isolated: a private exchange and queues for the service, deleted after each run."""
    tok = secrets.token_hex(3)
    args.queue = f"{args.queue}.bench-{tok}"
    args.cancel_queue = f"{args.cancel_queue}.bench-{tok}"
    args.exchange = f"{args.exchange}.bench-{tok}"
