"""Smoke run of the benchmark script: it must keep working, its speed is not asserted.

Runs ``bench/run_bench.py`` on a few dozen orders against a real service process, the
local RabbitMQ (private exchange and queue, deleted afterwards) and PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "run_bench.py"
N = 30


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _skip_reason() -> str | None:
    for port, what in ((5672, "RabbitMQ"), (5432, "PostgreSQL")):
        if not _reachable(port):
            return f"{what} is not reachable on 127.0.0.1:{port}"
    try:
        spec = importlib.util.find_spec("app.cli")
    except Exception as e:  # noqa: BLE001 - the package itself fails to import
        return f"the service package cannot be imported: {type(e).__name__}: {e}"
    if spec is None:
        return "the service entry point app.cli is not there yet"
    return None


def test_bench_script_smoke(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(BENCH),
        "--scenario",
        "flood",
        "--n",
        str(N),
        "--concurrency",
        "8",
        "--delay-ms",
        "0",
        "--decline-fraction",
        "0.1",
        "--isolated",
        "--db-url",
        "postgresql://root@127.0.0.1:5432/payments_bench_smoke",
        "--timeout",
        "20",
        "--work-dir",
        str(tmp_path),
        "--json-out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}"
    summary = json.loads(out.read_text())
    assert json.loads(proc.stdout) == summary
    assert summary["ok"] is True
    run = summary["results"]["flood"]["service"]
    for key in (
        "throughput_per_s",
        "latency_ms",
        "peak_rss_mib",
        "startup_s",
        "outcomes",
        "missing",
        "duplicates",
        "schema_errors",
        "cpu",
        "input_queue",
        "shutdown",
    ):
        assert key in run, key
    assert set(run["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert run["missing"] == 0 and run["schema_errors"] == 0 and run["outcome_mismatches"] == 0
    assert run["outcomes"]["succeeded"] + run["outcomes"]["failed"] == N
    assert run["peak_rss_mib"] > 0 and run["startup_s"] > 0
