"""Repeated runs summed up: the median and spread of each figure per variant, and ratios.

Ratios are taken between medians (`ratios`), and also pair by pair within a round of the
alternation (`paired_ratios`: service run k against baseline run k), whose spread shows how
much of a difference is the machine's noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

# name -> how to read it from one run's result
METRICS: dict[str, Callable[[dict], float | None]] = {
    "throughput_per_s": lambda r: r.get("throughput_per_s"),
    "p50_ms": lambda r: r["latency_ms"].get("p50"),
    "p95_ms": lambda r: r["latency_ms"].get("p95"),
    "p99_ms": lambda r: r["latency_ms"].get("p99"),
    "max_ms": lambda r: r["latency_ms"].get("max"),
    "cpu_ms_per_order": lambda r: r["cpu"].get("target_ms_per_order"),
    "system_ms_per_order": lambda r: r["cpu"].get("target_system_ms_per_order"),
    "rabbitmq_ms_per_order": lambda r: r["cpu"].get("rabbitmq_ms_per_order"),
    "postgres_ms_per_order": lambda r: r["cpu"].get("postgres_ms_per_order"),
    "machine_busy_pct": lambda r: r["cpu"].get("machine_busy_pct"),
    "peak_rss_mib": lambda r: r.get("peak_rss_mib"),
    "rss_at_ready_mib": lambda r: r.get("rss_at_ready_mib"),
    "startup_s": lambda r: r.get("startup_s"),
    "queue_growth_per_s": lambda r: r["input_queue"].get("growth_per_s_while_publishing"),
    "poller_requests": lambda r: (r.get("pollers") or {}).get("requests"),
    "poller_cpu_s": lambda r: (r.get("pollers") or {}).get("pollers_cpu_s"),
}
# Figures whose ratio means something (the others are context).
RATIO_METRICS = (
    "throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_order", "peak_rss_mib", "startup_s",
)  # fmt: skip


def spread(values: list[float | None], digits: int = 3) -> dict | None:
    """Median, min, max and quartiles of the values that are not None."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    q1, q3 = statistics.quantiles(v, n=4, method="inclusive")[::2] if len(v) > 1 else (v[0], v[0])
    return {
        "median": round(statistics.median(v), digits),
        "min": v[0],
        "max": v[-1],
        "q1": round(q1, digits),
        "q3": round(q3, digits),
        "n": len(v),
    }


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, digits)


def summarize(runs: list[dict]) -> dict:
    """One variant's runs: every run kept, plus the spread of each figure."""
    figures = {name: spread([read(r) for r in runs]) for name, read in METRICS.items()}
    out = {
        "target": runs[0]["target"],
        "variant": runs[0].get("variant", runs[0]["target"]),
        "ok": all(r["ok"] for r in runs),
        "repeat": len(runs),
        "summary": {k: v for k, v in figures.items() if v is not None},
        "runs": runs,
    }
    if any("keeps_up" in r for r in runs):
        out["keeps_up_runs"] = f"{sum(bool(r.get('keeps_up')) for r in runs)}/{len(runs)}"
    return out


def ratio_name(variant: str, reference: str) -> str:
    return f"{variant}_over_{reference}".replace("+", "_")


def compare(a: dict, b: dict) -> tuple[dict, dict]:
    """(ratios of medians, spread of the pairwise ratios) of variant a over variant b."""
    medians, paired = {}, {}
    for name in RATIO_METRICS:
        sa, sb = a["summary"].get(name), b["summary"].get(name)
        medians[name] = ratio(sa and sa["median"], sb and sb["median"])
        read = METRICS[name]
        pairs = [ratio(read(x), read(y)) for x, y in zip(a["runs"], b["runs"], strict=False)]
        paired[name] = spread(pairs)
    return medians, paired


def reference_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Which variant is compared with which: service over baseline; X+pollers over X; any other
    over service (and candidates over baseline)."""
    pairs = []
    if "service" in names and "baseline" in names:
        pairs.append(("service", "baseline"))
    for n in names:
        if n.endswith("+pollers") and n.removesuffix("+pollers") in names:
            pairs.append((n, n.removesuffix("+pollers")))
    others = [n for n in names if n not in ("service", "baseline") and not n.endswith("+pollers")]
    pairs += [(n, "service") for n in others if "service" in names]
    pairs += [(n, "baseline") for n in others if "baseline" in names]
    return pairs


def assemble(config: dict, runs: dict[str, list[dict]]) -> dict:
    """A scenario's result: its configuration, each variant summarized, and the ratios."""
    out: dict = {"config": config, "repeat": max(len(v) for v in runs.values()), "variants": list(runs)}
    for name, variant_runs in runs.items():
        out[name] = summarize(variant_runs)
    for a, b in reference_pairs(list(runs)):
        medians, paired = compare(out[a], out[b])
        out.setdefault("ratios", {})[ratio_name(a, b)] = medians
        out.setdefault("paired_ratios", {})[ratio_name(a, b)] = paired
    return out


def median_of(result: dict, variant: str, metric: str) -> float | None:
    s = (result.get(variant) or {}).get("summary", {}).get(metric)
    return s["median"] if s else None
