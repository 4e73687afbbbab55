"""Smoke runs of the benchmark scripts: they must keep working, their speed is not asserted.

`bench/run_bench.py` runs on a few dozen orders against real service processes, the local
RabbitMQ (private exchange and queues, deleted afterwards) and PostgreSQL (a database of
this test run's own): a flood repeated twice, and the pollers scenario. `bench/table.py`
turns their JSON into the Markdown table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "run_bench.py"
TABLE = REPO / "bench" / "table.py"
DATABASE = os.environ.get("TEST_DATABASE", "payments_test") + "_bench"
N = 30
FIGURES = {"throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_order", "peak_rss_mib", "startup_s"}


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _servers() -> None:
    for port, what in ((5672, "RabbitMQ"), (5432, "PostgreSQL")):
        if not _reachable(port):
            pytest.skip(f"{what} is not reachable on 127.0.0.1:{port}")
    if importlib.util.find_spec("app.cli") is None:
        pytest.skip("the service entry point app.cli is not there yet")


def _bench(tmp_path: Path, *options: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(BENCH), *options, "--isolated", "--db-url",
        f"postgresql://root@127.0.0.1:5432/{DATABASE}", "--timeout", "20", "--work-dir", str(tmp_path),
        "--json-out", str(out), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}"
    summary = json.loads(out.read_text())
    assert json.loads(proc.stdout) == summary
    assert summary["ok"] is True
    return summary


def _check_run(run: dict[str, Any], n: int) -> None:
    for key in ("throughput_per_s", "latency_ms", "peak_rss_mib", "startup_s", "outcomes", "missing", "duplicates",
                "schema_errors", "cpu", "input_queue", "shutdown"):  # fmt: skip
        assert key in run, key
    assert set(run["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert run["missing"] == 0 and run["schema_errors"] == 0 and run["outcome_mismatches"] == 0
    assert run["outcomes"]["succeeded"] + run["outcomes"]["failed"] == n
    assert run["peak_rss_mib"] > 0 and run["startup_s"] > 0 and run["cpu"]["target_ms_per_order"] > 0


def _check_summary(variant: dict[str, Any], runs: int) -> None:
    assert variant["ok"] is True and variant["repeat"] == runs and len(variant["runs"]) == runs
    assert set(variant["summary"]) >= FIGURES
    for figure in FIGURES:
        s = variant["summary"][figure]
        assert s["n"] == runs and s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"], (figure, s)


def _table(tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(TABLE), str(tmp_path / "bench.json")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_flood_repeated_twice(tmp_path: Path) -> None:
    options = ["--scenario", "flood", "--n", str(N), "--concurrency", "8", "--decline-fraction", "0.1"]
    summary = _bench(tmp_path, *options, "--repeat", "2")
    flood = summary["results"]["flood"]
    assert flood["repeat"] == 2 and flood["variants"] == ["service"]
    _check_summary(flood["service"], 2)
    for run in flood["service"]["runs"]:
        _check_run(run, N)
        assert run["outcomes"]["failed"] == 3  # 10% declined
    assert flood["service"]["summary"]["throughput_per_s"]["median"] > 0
    lines = _table(tmp_path).splitlines()
    assert any(line.startswith("| flood 30, 0 ms gateway, concurrency 8 | throughput") for line in lines), lines
    assert "medians of 2 alternating runs" in lines[0]


def test_pollers_scenario(tmp_path: Path) -> None:
    options = ["--scenario", "pollers", "--rate", "40", "--n", str(N), "--pollers", "2", "--poll-rate", "20"]
    summary = _bench(tmp_path, *options)
    res = summary["results"]["pollers"]
    assert res["variants"] == ["service", "service+pollers"]
    assert res["config"]["pollers"] == 2 and res["config"]["rate"] == 40
    for name in res["variants"]:
        _check_summary(res[name], 1)
        _check_run(res[name]["runs"][0], N)
    polled = res["service+pollers"]["runs"][0]["pollers"]
    assert "pollers" not in res["service"]["runs"][0]
    assert polled["pollers"] == 2 and not polled["errors"]
    for path in ("/healthz/readiness", "/metrics"):
        assert polled["paths"][path]["requests"] > 0 and set(polled["paths"][path]["statuses"]) == {"200"}
    ratio = res["ratios"]["service_pollers_over_service"]["p99_ms"]
    assert ratio is not None and ratio > 0
    assert "payments p99 with pollers" in _table(tmp_path)
