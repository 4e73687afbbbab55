"""One measured run: start a fresh target, drive it with N orders, read its memory and CPU, stop it."""

from __future__ import annotations

import argparse
import asyncio

from infra import Broker, log, log_levels
from loadgen import LoadConfig, run_load
from outcome_check import all_arrived
from pollers import PollerProcess
from proc_stats import CpuWindow, memory_report, sample_rss, thin
from profiling import Profiler
from targets import BaselineTarget, ServiceTarget, Target, Variant, make_target

_LOAD_KEYS = (
    "run_id", "order_base", "published", "publish_rate", "publish_duration_s", "publish_returned_unroutable",
    "publish_nacked", "publish_errors", "received", "outcome_messages_total", "unexpected_outcomes", "window_s",
    "wait_s", "timed_out", "connection_lost", "target_exited", "missing_sample", "schema_error_samples",
    "mismatch_samples", "input_queue_at_start", "warnings", "publish_lag_ms",
)  # fmt: skip


def _load_config(args: argparse.Namespace, target: Target, n: int, rate: float) -> LoadConfig:
    return LoadConfig(
        n=n,
        rate=rate,
        amqp_url=args.amqp_url,
        exchange=target.exchange,
        input_queue=target.queue,
        window=args.window or (max(256, int(2 * rate)) if rate else 256),
        timeout_s=args.timeout,
        decline_fraction=args.decline_fraction,
    )


async def _observe(args: argparse.Namespace, target: Target, broker: Broker, label: str, cfg: LoadConfig) -> dict:
    """Everything measured while the target runs: the load itself, CPU, memory, parked messages."""
    pid = target.proc.pid
    dlq = f"{target.queue}.dlq"
    seen: dict = {"purged_after_ready": await broker.purge(target.queue), "dlq_before": await broker.queue_state(dlq)}
    seen["idle_mem"] = memory_report(pid)
    profiler = Profiler(args, pid, label, target.variant.name) if args.profile else None
    pollers = None
    if target.variant.pollers and isinstance(target, ServiceTarget):
        pollers = PollerProcess(target.port, target.variant.pollers, args.poll_rate)
        await pollers.start()
    cpu = CpuWindow(pid)
    cpu.start()
    rss_samples: list[tuple[float, float]] = []
    rss_task = asyncio.create_task(sample_rss(pid, rss_samples))
    try:
        seen["load"] = await run_load(cfg, alive=target.alive)
    finally:
        rss_task.cancel()
        seen["cpu"] = cpu.stop()
        seen["pollers"] = await pollers.stop() if pollers else None
        seen["profile"] = await profiler.stop() if profiler else None
    seen["mem"] = memory_report(pid)
    seen["rss_samples"] = rss_samples
    seen["dlq_after"] = await broker.queue_state(dlq)
    return seen


async def measure(
    args: argparse.Namespace, variant: Variant, label: str, n: int, concurrency: int, delay_ms: float, rate: float
) -> dict:
    """Start a fresh target, drive it with n orders, read RSS/CPU, stop it."""
    target = make_target(args, variant, concurrency, delay_ms, label)
    log(
        args,
        f"{label}: {variant.name} n={n} concurrency={concurrency} delay={delay_ms:g}ms "
        f"rate={'flood' if not rate else f'{rate:g}/s'}",
    )
    async with Broker(args.amqp_url) as broker:
        await broker.wait_no_consumer(target.queue)
        purged_before = await broker.purge(target.queue)
        startup_s = await target.start()
        try:
            seen = await _observe(args, target, broker, label, _load_config(args, target, n, rate))
        finally:
            stop = await target.stop()
            if isinstance(target, ServiceTarget) and args.isolated:
                await broker.delete([q for queue in target.queues() for q in (queue, f"{queue}.dlq")], target.exchange)
    result = _result(args, target, seen, n, concurrency, delay_ms, rate)
    result.update(startup_s=round(startup_s, 3), shutdown=stop)
    result["queue_purged"] = {"before_start": purged_before, "after_ready": seen["purged_after_ready"]}
    if stop.get("exit_code") not in (0, None):
        result.setdefault("problems", []).append(f"exit code {stop.get('exit_code')} after SIGTERM")
    if isinstance(target, BaselineTarget):
        result["baseline_stats"] = target.final_stats()
    log(
        args,
        f"{label}: {variant.name} throughput={result['throughput_per_s']}/s "
        f"p99={result['latency_ms']['p99']}ms cpu/order={result['cpu']['target_ms_per_order']}ms "
        f"peak_rss={result['peak_rss_mib']}MiB startup={result['startup_s']}s ok={result['ok']}",
    )
    return result


def _result(
    args: argparse.Namespace, target: Target, seen: dict, n: int, concurrency: int, delay_ms: float, rate: float
) -> dict:
    load, mem, cpu = seen["load"], seen["mem"], seen["cpu"]
    received = load["received"] or 1
    dlq0, dlq1 = seen["dlq_before"], seen["dlq_after"]
    result = {
        "target": target.name,
        "variant": target.variant.name,
        "config": {
            "n": n,
            "concurrency": concurrency,
            "delay_ms": delay_ms,
            "rate": rate or None,
            "decline_fraction": args.decline_fraction,
            "pollers": target.variant.pollers or None,
        },
        "ok": all_arrived(load),
        "throughput_per_s": load["throughput"],
        "latency_ms": load["latency_ms"],
        **{
            k: load[k]
            for k in ("outcomes", "failure_codes", "missing", "duplicates", "schema_errors", "outcome_mismatches")
        },
        "peak_rss_mib": mem["peak_rss_mib"],
        "rss_after_load_mib": mem["rss_now_mib"],
        "rss_at_ready_mib": seen["idle_mem"]["rss_now_mib"],
        "rss_timeline_t_s_mib": thin(seen["rss_samples"]),
        "processes": mem["processes"],
        "cpu": {
            "target_s": cpu["target_s"],
            "target_ms_per_order": round(cpu["target_s"] * 1000 / received, 3),
            "loadgen_s": load["loadgen_cpu_s"],
            **{k: v for k, v in cpu.items() if k != "target_s"},
            **{f"{k}_ms_per_order": round(cpu[f"{k}_s"] * 1000 / received, 3) for k in ("rabbitmq", "postgres")},
            "target_system_ms_per_order": round(cpu["target_system_s"] * 1000 / received, 3),
        },
        "input_queue": load["input_queue"],
        "dlq_growth": (dlq1["messages"] - dlq0["messages"]) if dlq0 and dlq1 else None,
        "log": str(target.log_path),
        "load": {k: load[k] for k in _LOAD_KEYS if k in load},
    }
    if seen["pollers"] is not None:
        result["pollers"] = seen["pollers"]
    if seen["profile"] is not None:
        result["profile"] = seen["profile"]
    if isinstance(target, ServiceTarget):
        result["log_summary"] = log_levels(target.log_path)
    return result
