"""HTTP pollers of the service's probes and metrics, in a process of their own.

`python bench/pollers.py --port P --pollers N` opens N keep-alive HTTP/1.1 connections; each
poller requests `/healthz/readiness` and `/metrics` in turn, as fast as the answers come
(`--rate 0`) or at a fixed rate per poller. On SIGTERM/SIGINT it prints one JSON line:
requests and statuses per path, latency percentiles, errors and the pollers' own CPU time.

A separate process, so that the pollers' work never delays the load generator's clock (the
latencies it measures); they still share the machine's cores with everything else, as
scrapers and kubelets on the same node would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

PATHS = ("/healthz/readiness", "/metrics")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response, its body read and dropped (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # body until the server closes
        return status, False
    return status, headers.get("connection", "").lower() != "close"


class Poller:
    def __init__(self, port: int, rate: float, stats: dict) -> None:
        self.port = port
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stats = stats

    async def run(self, stop: asyncio.Event) -> None:
        reader = writer = None
        i = 0
        next_at = time.perf_counter()
        while not stop.is_set():
            path = PATHS[i % len(PATHS)]
            i += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                t0 = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
                status, keep = await _read_response(reader)
                self.stats["latency"][path].append(time.perf_counter() - t0)
                self.stats["status"][path][str(status)] += 1
                if not keep:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
                self.stats["errors"][type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)  # the service is gone or restarting: no hot loop
            if self.interval:
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if writer is not None:
            writer.close()


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(1000 * v[max(0, min(len(v) - 1, math.ceil(p / 100 * len(v)) - 1))], 2)


def report(stats: dict, wall_s: float, cpu_s: float, pollers: int, rate: float) -> dict:
    per_path = {
        path: {
            "requests": sum(stats["status"][path].values()),
            "statuses": dict(stats["status"][path]),
            "p50_ms": _percentile(stats["latency"][path], 50),
            "p99_ms": _percentile(stats["latency"][path], 99),
        }
        for path in PATHS
    }
    total = sum(p["requests"] for p in per_path.values())
    return {
        "pollers": pollers,
        "rate_per_poller": rate or None,
        "requests": total,
        "requests_per_s": round(total / wall_s, 1) if wall_s > 0 else None,
        "errors": dict(stats["errors"]),
        "paths": per_path,
        "wall_s": round(wall_s, 3),
        "pollers_cpu_s": round(cpu_s, 3),
    }


async def _main(args: argparse.Namespace) -> dict:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = {
        "latency": {p: [] for p in PATHS},
        "status": {p: Counter() for p in PATHS},
        "errors": Counter(),
    }
    print("POLLING", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    tasks = [asyncio.create_task(Poller(args.port, args.rate, stats).run(stop)) for _ in range(args.pollers)]
    await stop.wait()
    await asyncio.wait(tasks, timeout=5)
    return report(stats, time.perf_counter() - t0, time.process_time() - c0, args.pollers, args.rate)


class PollerProcess:
    """The pollers as a child process of the benchmark: `start()` before the load, `stop()` after."""

    def __init__(self, port: int, pollers: int, rate: float) -> None:
        self.cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
        self.cmd += ["--pollers", str(pollers), "--rate", f"{rate:g}"]
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        # Popen returns as soon as the child exists; its first line is awaited off the event loop.
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != "POLLING":
            raise RuntimeError(f"pollers did not start: {line!r} {self.proc.stderr.read()[-500:]}")

    async def stop(self) -> dict:
        if self.proc is None:
            return {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = await asyncio.to_thread(self.proc.communicate, timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return {"error": "pollers did not stop"}
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"no report from the pollers: {err[-500:]}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pollers", type=int, default=10)
    p.add_argument("--rate", type=float, default=0.0, help="requests/s per poller; 0 = as fast as answered")
    args = p.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        print(json.dumps(runner.run(_main(args))), flush=True)


if __name__ == "__main__":
    main()
