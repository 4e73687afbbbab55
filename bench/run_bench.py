#!/usr/bin/env python3
"""Benchmark the payment service end to end against the local PostgreSQL and RabbitMQ.

For every measured run the script starts a fresh service process configured only by
environment variables, waits for ``GET /healthz/readiness`` == 200 (start-up time),
drives it with ``bench/loadgen.py`` (N OrderStockConfirmedEvents, flooded or paced),
reads the peak RSS (VmHWM of the process and its children) and CPU time, stops it with
SIGTERM and prints one JSON summary on stdout. With ``--compare`` the same load is run
against the hand-written baseline pipeline and the ratios are reported.

Scenarios (explicit --n/--concurrency/--delay-ms/--rate override the presets):

  flood          5000 orders, 0 ms gateway, CONSUMER_CONCURRENCY=64
  gateway-100ms  2000 orders, 100 ms gateway, CONSUMER_CONCURRENCY=16
  paced          --rate orders/s (default: 60% of the baseline's flood throughput,
                 measured first), 0 ms gateway, concurrency 64; samples the input
                 queue depth and reports its growth
  startup        start/stop --repeat times; time to readiness and idle RSS
  scaling        flood 5000 then 20000 (fresh process each); throughput/p99/RSS ratios
  all            every scenario above

Exit status: 0 when every run got one valid outcome per order, 1 otherwise, 2 on a
setup error (service did not start, broker/database unreachable, ...).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402

from loadgen import LoadConfig, all_arrived, iso_now, run_load  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VERSION = "1"
DEFAULT_QUEUE = "payment.stock-confirmed"
DEFAULT_EXCHANGE = "foodies"
BASELINE_QUEUE = "payment.stock-confirmed"  # hard-wired in the baseline script
BASELINE_EXCHANGE = "foodies"

PRESETS = {
    "flood": {"n": 5000, "concurrency": 64, "delay_ms": 0.0, "rate": 0.0},
    "gateway-100ms": {"n": 2000, "concurrency": 16, "delay_ms": 100.0, "rate": 0.0},
    "paced": {"n": None, "concurrency": 64, "delay_ms": 0.0, "rate": None},
    "startup": {"concurrency": 64, "delay_ms": 0.0},
    "scaling": {"n": 5000, "n_large": 20000, "concurrency": 64, "delay_ms": 0.0, "rate": 0.0},
}
SCENARIOS = ["flood", "gateway-100ms", "paced", "startup", "scaling"]


class SetupError(RuntimeError):
    pass


def log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc helpers
def proc_tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def vm_status(pid: int) -> dict:
    res: dict = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:", "Name:", "Threads:")):
                    k, v = line.split(":", 1)
                    res[k] = v.strip() if k == "Name" else int(v.split()[0])
    except OSError:
        pass
    return res


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid plus its waited-for children (cutime+cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


INFRA = {"rabbitmq": ("beam.smp", "erl_child_setup", "epmd"), "postgres": ("postgres",)}


def infra_cpu() -> dict[str, dict[int, float]]:
    """CPU seconds per pid of the broker and the database server processes."""
    res: dict[str, dict[int, float]] = {k: {} for k in INFRA}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        for k, names in INFRA.items():
            if comm in names:
                res[k][int(entry)] = cpu_seconds(int(entry))
    return res


def infra_delta(before: dict, after: dict) -> dict[str, float]:
    return {k: round(sum(v - before[k].get(p, 0.0) for p, v in after[k].items()), 3) for k in after}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def memory_report(pid: int) -> dict:
    procs = []
    for p in proc_tree(pid):
        st = vm_status(p)
        if st:
            procs.append({"pid": p, "name": st.get("Name"), "vm_hwm_kib": st.get("VmHWM"),
                          "vm_rss_kib": st.get("VmRSS"), "threads": st.get("Threads")})
    hwm = sum(p["vm_hwm_kib"] or 0 for p in procs)
    rss = sum(p["vm_rss_kib"] or 0 for p in procs)
    return {"peak_rss_mib": round(hwm / 1024, 1), "rss_now_mib": round(rss / 1024, 1),
            "processes": procs}


async def sample_rss(pid: int, out: list, interval: float = 0.5) -> None:
    """VmRSS of the process tree every interval seconds, in MiB."""
    t0 = time.perf_counter()
    while True:
        rss = sum(vm_status(p).get("VmRSS", 0) for p in proc_tree(pid))
        out.append((round(time.perf_counter() - t0, 1), round(rss / 1024, 1)))
        await asyncio.sleep(interval)


def thin(points: list, limit: int = 40) -> list:
    if len(points) > limit:
        step = len(points) / limit
        points = [points[int(k * step)] for k in range(limit)] + [points[-1]]
    return [list(p) for p in points]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, asyncio.TimeoutError, ValueError):
        return None
    finally:
        writer.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_LEVEL_RE = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b")


def log_levels(path: Path) -> dict:
    """Count WARNING/ERROR/CRITICAL records in a (json or text) log and keep a few errors."""
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0}
    samples: list[str] = []
    lines = 0
    try:
        fh = open(path, errors="replace")
    except OSError:
        return {}
    with fh:
        for line in fh:
            lines += 1
            level = None
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict):
                    lv = rec.get("level") or rec.get("levelname") or rec.get("severity")
                    if isinstance(lv, dict):
                        lv = lv.get("name")
                    if lv is None and isinstance(rec.get("record"), dict):  # loguru serialize=True
                        lv = rec["record"].get("level", {}).get("name")
                    level = str(lv).upper() if lv else None
            else:
                m = _LEVEL_RE.search(line)
                level = m.group(1) if m else None
            if level in ("WARN",):
                level = "WARNING"
            if level in counts:
                counts[level] += 1
                if level != "WARNING" and len(samples) < 3:
                    samples.append(line.strip()[:400])
    return {"lines": lines, "warnings": counts["WARNING"],
            "errors": counts["ERROR"] + counts["CRITICAL"], "error_samples": samples}


# ------------------------------------------------------------ broker & database
def admin_dsn(db_url: str) -> tuple[str, str]:
    """(maintenance DSN on db 'postgres', database name) from the service's DB_URL."""
    url = db_url
    if url.startswith("jdbc:"):
        url = url[5:]
    url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "postgres"
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, "")), db


async def ensure_database(args: argparse.Namespace, drop: bool = False) -> None:
    dsn, db = admin_dsn(args.db_url)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", db):
        raise SetupError(f"unsupported database name {db!r}")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


async def truncate_tables(args: argparse.Namespace) -> list[str]:
    """Empty the service's data tables (if the migrations created them already)."""
    dsn = args.db_url.replace("jdbc:", "", 1).replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    done = []
    try:
        await conn.execute("SET lock_timeout = '5s'")
        for table in args.truncate:
            if await conn.fetchval("SELECT to_regclass($1)", table):
                await conn.execute(f'TRUNCATE TABLE "{table}" RESTART IDENTITY CASCADE')
                done.append(table)
    finally:
        await conn.close()
    return done


class Broker:
    """Short-lived admin operations on RabbitMQ (each on its own channel)."""

    def __init__(self, url: str):
        self.url = url
        self.conn: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> "Broker":
        self.conn = await aio_pika.connect(self.url, client_properties={"connection_name": "bench-admin"})
        return self

    async def __aexit__(self, *exc) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def queue_state(self, name: str) -> dict | None:
        ch = await self.conn.channel()
        try:
            q = await ch.declare_queue(name, passive=True)
            res = q.declaration_result
            return {"messages": res.message_count, "consumers": res.consumer_count}
        except Exception:  # noqa: BLE001 - absent queue closes the channel
            return None
        finally:
            with contextlib.suppress(Exception):
                await ch.close()

    async def wait_no_consumer(self, name: str, timeout: float = 15.0) -> None:
        """The previous target's consumer can linger for a moment after its process exited."""
        deadline = time.perf_counter() + timeout
        while True:
            state = await self.queue_state(name)
            if not state or not state["consumers"]:
                return
            if time.perf_counter() > deadline:
                raise SetupError(f"queue {name!r} has {state['consumers']} consumer(s) besides this benchmark; "
                                 "stop them first (or use --isolated for service-only runs)")
            await asyncio.sleep(0.2)

    async def purge(self, name: str) -> int | None:
        ch = await self.conn.channel()
        try:
            q = await ch.declare_queue(name, passive=True)
            res = await q.purge()
            return res.message_count
        except Exception:  # noqa: BLE001
            return None
        finally:
            with contextlib.suppress(Exception):
                await ch.close()

    async def delete(self, queues: list[str], exchange: str | None) -> None:
        ch = await self.conn.channel()
        try:
            for q in queues:
                with contextlib.suppress(Exception):
                    await (await ch.get_underlay_channel()).queue_delete(q)
            if exchange:
                with contextlib.suppress(Exception):
                    await (await ch.get_underlay_channel()).exchange_delete(exchange)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()


# --------------------------------------------------------------------- profiling
_WAIT_LEAVES = ("Condition.wait", "Event.wait", "Queue.get", "select (", "poll (", "_worker (")


def pyspy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _frame_key(frame: str) -> str:
    """'func (path/to/pkg/mod.py:123)' -> 'func (pkg/mod.py)'."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "/app/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/app/":
                path = "app/" + path
            break
    return f"{func} ({path})"


def summarize_profile(raw_path: Path, top: int = 25) -> dict:
    """Top self and inclusive frames of a py-spy raw (collapsed stacks) file."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    pkg: Counter = Counter()
    total = waiting = 0
    try:
        lines = raw_path.read_text(errors="replace").splitlines()
    except OSError:
        return {"error": f"no profile written to {raw_path}"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_key(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any(w in frames[-1] for w in _WAIT_LEAVES):
            waiting += n  # a thread blocked in a lock or queue: not CPU work
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        m = re.search(r"\(([^/()]+)/", frames[-1])
        pkg[m.group(1) if m else frames[-1].rsplit("(", 1)[-1].rstrip(")")] += n

    def pct(c: Counter, limit: int = top) -> list[list]:
        return [[k, round(100.0 * v / total, 1)] for k, v in c.most_common(limit)] if total else []

    return {"samples": total, "blocked_thread_samples": waiting, "raw": str(raw_path),
            "self_pct": pct(self_c), "inclusive_pct": pct(incl, 2 * top), "self_pct_by_package": pct(pkg)}


class Profiler:
    def __init__(self, args: argparse.Namespace, pid: int, label: str, kind: str):
        exe = pyspy_path()
        if exe is None:
            raise SetupError("--profile needs py-spy (pip install py-spy)")
        self.raw = Path(args.work_dir) / f"{label}.{kind}.pyspy.txt"
        self.raw.unlink(missing_ok=True)
        self.err = Path(args.work_dir) / f"{label}.{kind}.pyspy.log"
        with open(self.err, "wb") as errf:
            self.proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(self.raw),
                 "--rate", str(args.profile_rate), "--nonblocking", "--subprocesses"],
                stdout=errf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        for _ in range(300):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
        res = summarize_profile(self.raw)
        if "error" in res:
            res["log"] = tail(self.err, 5)
        return res


# ---------------------------------------------------------------------- targets
class Target:
    name = "?"
    queue = DEFAULT_QUEUE
    exchange = DEFAULT_EXCHANGE

    def __init__(self, args: argparse.Namespace, concurrency: int, delay_ms: float, label: str):
        self.args = args
        self.concurrency = concurrency
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(args.work_dir) / f"{label}.{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    async def prepare(self) -> None:
        pass

    async def wait_ready(self, t_start: float) -> None:
        raise NotImplementedError

    async def start(self) -> float:
        await self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(REPO))
        logf.close()
        try:
            await self.wait_ready(t0)
        except BaseException:
            await self.stop()
            raise
        return time.perf_counter() - t0

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SetupError(f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                             f"log {self.log_path}:\n{tail(self.log_path)}")

    async def stop(self) -> dict:
        if self.proc is None:
            return {}
        tree = proc_tree(self.proc.pid)
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = t0 + self.args.stop_timeout
        while self.proc.poll() is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        killed = False
        if self.proc.poll() is None:
            self.proc.kill()
            killed = True
            self.proc.wait()
        # children the process left behind
        for p in tree[1:]:
            if os.path.exists(f"/proc/{p}"):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
        res = {"exit_code": self.proc.returncode, "shutdown_s": round(time.perf_counter() - t0, 3),
               "killed_after_timeout": killed}
        self.proc = None
        return res


class ServiceTarget(Target):
    name = "service"

    def __init__(self, args: argparse.Namespace, concurrency: int, delay_ms: float, label: str):
        super().__init__(args, concurrency, delay_ms, label)
        self.queue = args.queue
        self.exchange = args.exchange
        self.port = args.port or free_port()

    def command(self) -> list[str]:
        if self.args.service_cmd:
            return self.args.service_cmd.split()
        script = Path(sys.executable).parent / "payment-service"
        if script.exists():
            return [str(script)]
        return [sys.executable, "-m", "app"]

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DB_URL": self.args.db_url,
            "RABBITMQ_HOST": "127.0.0.1",
            "RABBITMQ_PORT": "5672",
            "RABBITMQ_CONSUME_QUEUE": self.queue,
            "RABBITMQ_PUBLISH_EXCHANGE": self.exchange,
            "PAYMENT_DELAY_MS": f"{self.delay_ms:g}",
            "CONSUMER_CONCURRENCY": str(self.concurrency),
            "LOG_LEVEL": self.args.log_level,
            "LOG_FORMAT": "json",
        })
        for kv in self.args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        return env

    async def prepare(self) -> None:
        await ensure_database(self.args)
        if not self.args.keep_data:
            await truncate_tables(self.args)

    async def wait_ready(self, t0: float) -> None:
        deadline = t0 + self.args.startup_timeout
        while time.perf_counter() < deadline:
            self._check_alive()
            if await http_status(self.port, "/healthz/readiness", timeout=1.0) == 200:
                return
            await asyncio.sleep(0.02)
        raise SetupError(f"service not ready after {self.args.startup_timeout}s; log {self.log_path}:\n"
                         f"{tail(self.log_path)}")


class BaselineTarget(Target):
    name = "baseline"
    queue = BASELINE_QUEUE
    exchange = BASELINE_EXCHANGE

    def command(self) -> list[str]:
        return [sys.executable, str(self.args.baseline), "--gateway-delay-ms", f"{self.delay_ms:g}",
                "--prefetch", str(self.concurrency), "--purge"]

    async def wait_ready(self, t0: float) -> None:
        deadline = t0 + self.args.startup_timeout
        while time.perf_counter() < deadline:
            self._check_alive()
            try:
                if any(line.strip() == "READY" for line in self.log_path.read_text(errors="replace").splitlines()):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.02)
        raise SetupError(f"baseline not ready after {self.args.startup_timeout}s; log {self.log_path}:\n"
                         f"{tail(self.log_path)}")

    def final_stats(self) -> dict | None:
        for line in reversed(self.log_path.read_text(errors="replace").splitlines()):
            if line.startswith('{"stats"'):
                with contextlib.suppress(ValueError):
                    return json.loads(line)["stats"]
        return None


def make_target(kind: str, args: argparse.Namespace, concurrency: int, delay_ms: float, label: str) -> Target:
    return (ServiceTarget if kind == "service" else BaselineTarget)(args, concurrency, delay_ms, label)


# ------------------------------------------------------------------- one run
async def measure(args: argparse.Namespace, kind: str, label: str, n: int, concurrency: int,
                  delay_ms: float, rate: float) -> dict:
    """Start a fresh target, drive it with n orders, read RSS/CPU, stop it."""
    target = make_target(kind, args, concurrency, delay_ms, label)
    log(args, f"{label}: {kind} n={n} concurrency={concurrency} delay={delay_ms:g}ms "
              f"rate={'flood' if not rate else f'{rate:g}/s'}")
    dlq = f"{target.queue}.dlq"
    async with Broker(args.amqp_url) as broker:
        await broker.wait_no_consumer(target.queue)
        purged_before = await broker.purge(target.queue)
        startup_s = await target.start()
        result: dict = {"target": kind}
        try:
            purged_after = await broker.purge(target.queue)
            dlq_before = await broker.queue_state(dlq)
            pids = proc_tree(target.proc.pid)
            idle_mem = memory_report(target.proc.pid)
            profiler = Profiler(args, target.proc.pid, label, kind) if args.profile else None
            cpu0, i0, m0, w0 = tree_cpu(pids), infra_cpu(), machine_cpu(), time.perf_counter()
            rss_samples: list[tuple[float, float]] = []
            rss_task = asyncio.create_task(sample_rss(target.proc.pid, rss_samples))
            try:
                load = await run_load(LoadConfig(
                    n=n, rate=rate, amqp_url=args.amqp_url, exchange=target.exchange, input_queue=target.queue,
                    window=args.window or (max(256, int(2 * rate)) if rate else 256), timeout_s=args.timeout,
                    decline_fraction=args.decline_fraction,
                ), alive=lambda: target.proc is not None and target.proc.poll() is None)
            finally:
                rss_task.cancel()
                profile = await profiler.stop() if profiler else None
            pids = proc_tree(target.proc.pid)
            cpu1, i1, m1, w1 = tree_cpu(pids), infra_cpu(), machine_cpu(), time.perf_counter()
            mem = memory_report(target.proc.pid)
            dlq_after = await broker.queue_state(dlq)
        finally:
            stop = await target.stop()
            if isinstance(target, ServiceTarget) and args.isolated:
                await broker.delete([target.queue, dlq], target.exchange)
    svc_cpu = cpu1 - cpu0
    received = load["received"] or 1
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    result.update({
        "config": {"n": n, "concurrency": concurrency, "delay_ms": delay_ms, "rate": rate or None,
                   "decline_fraction": args.decline_fraction},
        "ok": all_arrived(load),
        "throughput_per_s": load["throughput"],
        "latency_ms": load["latency_ms"],
        "outcomes": load["outcomes"],
        "failure_codes": load["failure_codes"],
        "missing": load["missing"],
        "duplicates": load["duplicates"],
        "schema_errors": load["schema_errors"],
        "outcome_mismatches": load["outcome_mismatches"],
        "startup_s": round(startup_s, 3),
        "peak_rss_mib": mem["peak_rss_mib"],
        "rss_after_load_mib": mem["rss_now_mib"],
        "rss_at_ready_mib": idle_mem["rss_now_mib"],
        "rss_timeline_t_s_mib": thin(rss_samples),
        "processes": mem["processes"],
        "cpu": {
            "target_s": round(svc_cpu, 3),
            "target_ms_per_order": round(svc_cpu * 1000 / received, 3),
            "loadgen_s": load["loadgen_cpu_s"],
            **{f"{k}_s": v for k, v in infra_delta(i0, i1).items()},
            "machine_busy_pct": round(100.0 * busy / total, 1) if total else None,
            "wall_s": round(w1 - w0, 3),
        },
        "input_queue": load["input_queue"],
        "dlq_growth": (dlq_after["messages"] - dlq_before["messages"]) if dlq_before and dlq_after else None,
        "queue_purged": {"before_start": purged_before, "after_ready": purged_after},
        "shutdown": stop,
        "log": str(target.log_path),
        "load": {k: load[k] for k in (
            "run_id", "order_base", "published", "publish_rate", "publish_duration_s",
            "publish_returned_unroutable", "publish_nacked", "publish_errors", "received",
            "outcome_messages_total", "unexpected_outcomes", "window_s", "wait_s", "timed_out",
            "connection_lost", "target_exited", "missing_sample", "schema_error_samples", "mismatch_samples",
            "input_queue_at_start", "warnings") if k in load},
    })
    if profile is not None:
        result["profile"] = profile
    if "publish_lag_ms" in load:
        result["load"]["publish_lag_ms"] = load["publish_lag_ms"]
    if kind == "service":
        result["log_summary"] = log_levels(target.log_path)
    else:
        result["baseline_stats"] = target.final_stats()
    if stop.get("exit_code") not in (0, None):
        result.setdefault("problems", []).append(f"exit code {stop.get('exit_code')} after SIGTERM")
    log(args, f"{label}: {kind} throughput={result['throughput_per_s']}/s p99={result['latency_ms']['p99']}ms "
              f"peak_rss={result['peak_rss_mib']}MiB startup={result['startup_s']}s ok={result['ok']}")
    return result


def ratio(a, b, digits: int = 3):
    if a is None or b in (None, 0):
        return None
    return round(a / b, digits)


def ratios(svc: dict, base: dict) -> dict:
    return {
        "throughput_service_over_baseline": ratio(svc.get("throughput_per_s"), base.get("throughput_per_s")),
        "p50_service_over_baseline": ratio(svc["latency_ms"]["p50"], base["latency_ms"]["p50"]),
        "p99_service_over_baseline": ratio(svc["latency_ms"]["p99"], base["latency_ms"]["p99"]),
        "peak_rss_service_over_baseline": ratio(svc.get("peak_rss_mib"), base.get("peak_rss_mib")),
        "cpu_per_order_service_over_baseline": ratio(svc["cpu"]["target_ms_per_order"],
                                                     base["cpu"]["target_ms_per_order"]),
    }


def targets_of(args: argparse.Namespace) -> list[str]:
    if args.compare:
        return ["service", "baseline"]
    return [args.target]


def param(args: argparse.Namespace, preset: dict, key: str):
    v = getattr(args, key)
    return preset.get(key) if v is None else v


# ------------------------------------------------------------------ scenarios
async def scenario_load(args: argparse.Namespace, name: str, ctx: dict) -> dict:
    preset = PRESETS[name]
    n, c, d = param(args, preset, "n"), param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    rate = (args.rate or 0.0) if args.scenario == name else preset["rate"]
    out: dict = {"config": {"n": n, "concurrency": c, "delay_ms": d, "rate": rate or None}}
    for kind in targets_of(args):
        out[kind] = await measure(args, kind, name, n, c, d, rate)
        ctx.setdefault(name, {})[kind] = out[kind]
    if "service" in out and "baseline" in out:
        out["ratios"] = ratios(out["service"], out["baseline"])
    return out


async def scenario_paced(args: argparse.Namespace, ctx: dict) -> dict:
    preset = PRESETS["paced"]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    rate_source = "--rate"
    rate = args.rate
    if not rate:
        base_flood = ctx.get("flood", {}).get("baseline")
        if base_flood is None and args.baseline.exists():
            log(args, "paced: measuring the baseline's flood throughput to set the rate")
            fp = PRESETS["flood"]
            base_flood = await measure(args, "baseline", "paced-calibration", fp["n"], fp["concurrency"],
                                       fp["delay_ms"], 0.0)
            ctx.setdefault("paced-calibration", {})["baseline"] = base_flood
        if base_flood and base_flood.get("throughput_per_s"):
            rate = round(args.rate_fraction * base_flood["throughput_per_s"], 1)
            rate_source = f"{args.rate_fraction:g} x baseline flood throughput {base_flood['throughput_per_s']}/s"
        else:
            raise SetupError("paced: give --rate (no baseline flood throughput available to derive it)")
    n = args.n or max(200, int(rate * args.paced_seconds))
    out: dict = {"config": {"n": n, "concurrency": c, "delay_ms": d, "rate": rate, "rate_source": rate_source}}
    for kind in targets_of(args):
        r = await measure(args, kind, "paced", n, c, d, rate)
        out[kind] = r
        r["keeps_up"] = bool(r["throughput_per_s"] and r["throughput_per_s"] >= 0.95 * rate
                             and (r["input_queue"]["growth_per_s_while_publishing"] or 0) < 0.05 * rate)
    if "service" in out and "baseline" in out:
        out["ratios"] = ratios(out["service"], out["baseline"])
    return out


async def scenario_startup(args: argparse.Namespace, ctx: dict) -> dict:
    preset = PRESETS["startup"]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    out: dict = {"config": {"repeat": args.repeat, "concurrency": c, "delay_ms": d}}
    for kind in targets_of(args):
        runs = []
        for i in range(args.repeat):
            target = make_target(kind, args, c, d, f"startup{i + 1}")
            async with Broker(args.amqp_url) as broker:
                await broker.wait_no_consumer(target.queue)
                if kind == "service" and args.fresh_db and i == 0:
                    await ensure_database(args, drop=True)
                t = await target.start()
                mem = memory_report(target.proc.pid)
                stop = await target.stop()
                if isinstance(target, ServiceTarget) and args.isolated:
                    await broker.delete([target.queue, f"{target.queue}.dlq"], target.exchange)
            runs.append({"startup_s": round(t, 3), "rss_at_ready_mib": mem["rss_now_mib"],
                         "peak_rss_mib": mem["peak_rss_mib"], "shutdown": stop})
            log(args, f"startup: {kind} run {i + 1}: ready after {t:.3f}s, rss {mem['rss_now_mib']} MiB")
        times = [r["startup_s"] for r in runs]
        out[kind] = {"target": kind, "startup_s_median": round(statistics.median(times), 3),
                     "startup_s_min": min(times), "startup_s_max": max(times),
                     "peak_rss_mib_at_ready": max(r["peak_rss_mib"] for r in runs), "runs": runs, "ok": True}
        codes = sorted({r["shutdown"].get("exit_code") for r in runs} - {0})
        if codes:
            out[kind]["problems"] = [f"exit code {c} after SIGTERM" for c in codes]
    if "service" in out and "baseline" in out:
        out["ratios"] = {"startup_service_over_baseline": ratio(out["service"]["startup_s_median"],
                                                                 out["baseline"]["startup_s_median"])}
    return out


async def scenario_scaling(args: argparse.Namespace, ctx: dict) -> dict:
    preset = PRESETS["scaling"]
    n_small, n_large = args.n or preset["n"], args.n_large or preset["n_large"]
    c, d = param(args, preset, "concurrency"), param(args, preset, "delay_ms")
    out: dict = {"config": {"n_small": n_small, "n_large": n_large, "concurrency": c, "delay_ms": d}}
    for kind in targets_of(args):
        legs = {}
        reuse = ctx.get("flood", {}).get(kind)
        if reuse and reuse["config"]["n"] == n_small and reuse["config"]["concurrency"] == c \
                and reuse["config"]["delay_ms"] == d and not reuse["config"]["rate"]:
            legs[str(n_small)] = reuse  # same configuration, fresh process: reuse the flood run
        else:
            legs[str(n_small)] = await measure(args, kind, f"scaling-{n_small}", n_small, c, d, 0.0)
        legs[str(n_large)] = await measure(args, kind, f"scaling-{n_large}", n_large, c, d, 0.0)
        small, large = legs[str(n_small)], legs[str(n_large)]
        out[kind] = {
            "target": kind,
            "ok": small["ok"] and large["ok"],
            "summary": {
                str(k): {"throughput_per_s": v["throughput_per_s"], "p50_ms": v["latency_ms"]["p50"],
                         "p99_ms": v["latency_ms"]["p99"], "max_ms": v["latency_ms"]["max"],
                         "peak_rss_mib": v["peak_rss_mib"], "cpu_ms_per_order": v["cpu"]["target_ms_per_order"]}
                for k, v in legs.items()
            },
            "large_over_small": {
                "throughput": ratio(large["throughput_per_s"], small["throughput_per_s"]),
                "p99": ratio(large["latency_ms"]["p99"], small["latency_ms"]["p99"]),
                "peak_rss": ratio(large["peak_rss_mib"], small["peak_rss_mib"]),
                "peak_rss_delta_mib": round(large["peak_rss_mib"] - small["peak_rss_mib"], 1),
                "cpu_per_order": ratio(large["cpu"]["target_ms_per_order"], small["cpu"]["target_ms_per_order"]),
            },
            "runs": {k: v for k, v in legs.items()},
        }
    return out


async def run_all(args: argparse.Namespace) -> dict:
    wanted = SCENARIOS if args.scenario == "all" else [args.scenario]
    if args.scenario == "all" and any(getattr(args, k) is not None for k in ("n", "concurrency", "delay_ms")):
        raise SetupError("--scenario all runs the presets; --n/--concurrency/--delay-ms apply to one scenario")
    ctx: dict = {}
    summary: dict = {
        "bench": f"foodies-payment bench {VERSION}",
        "started_at": iso_now(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "scenario": args.scenario,
        "targets": targets_of(args),
        "results": {},
    }
    for name in wanted:
        if name == "paced":
            res = await scenario_paced(args, ctx)
        elif name == "startup":
            res = await scenario_startup(args, ctx)
        elif name == "scaling":
            res = await scenario_scaling(args, ctx)
        else:
            res = await scenario_load(args, name, ctx)
        summary["results"][name] = res
    if "paced-calibration" in ctx:
        summary["results"]["paced"]["baseline_flood_calibration"] = ctx["paced-calibration"]["baseline"]
    summary["ok"] = all(
        res[k].get("ok", False) for res in summary["results"].values() for k in ("service", "baseline") if k in res
    )
    summary["finished_at"] = iso_now()
    return summary


# ------------------------------------------------------------------------ CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=SCENARIOS + ["all"], default="flood")
    p.add_argument("--target", choices=["service", "baseline"], default="service",
                   help="what to drive (default service); --compare drives both")
    p.add_argument("--compare", action="store_true", help="also run the baseline and report ratios")
    p.add_argument("--n", type=int, default=None, help="orders per run (scaling: the small leg)")
    p.add_argument("--n-large", type=int, default=None, help="scaling: the large leg (default 20000)")
    p.add_argument("--concurrency", type=int, default=None, help="CONSUMER_CONCURRENCY / baseline --prefetch")
    p.add_argument("--delay-ms", type=float, default=None, help="PAYMENT_DELAY_MS / baseline --gateway-delay-ms")
    p.add_argument("--rate", type=float, default=None,
                   help="orders/s; 0 = flood. paced default: --rate-fraction x the baseline's flood throughput")
    p.add_argument("--rate-fraction", type=float, default=0.6)
    p.add_argument("--paced-seconds", type=float, default=15.0, help="paced: n = rate x this, unless --n")
    p.add_argument("--repeat", type=int, default=3, help="startup: number of starts")
    p.add_argument("--decline-fraction", type=float, default=0.0,
                   help='fraction of orders with card "0000" (declined)')
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for outcomes after the last publish")
    p.add_argument("--window", type=int, default=None,
                   help="unconfirmed publishes in flight (default 256; paced: 2 s worth of orders)")
    p.add_argument("--baseline", type=Path, default=REPO.parent / "shared" / "bench" / "baseline_pipeline.py")
    p.add_argument("--db-url", default="postgresql://root@127.0.0.1:5432/payments_bench",
                   help="DB_URL given to the service (database created if missing)")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queue", default=DEFAULT_QUEUE, help="RABBITMQ_CONSUME_QUEUE for the service")
    p.add_argument("--exchange", default=DEFAULT_EXCHANGE, help="RABBITMQ_PUBLISH_EXCHANGE for the service")
    p.add_argument("--isolated", action="store_true",
                   help="service only: use a private exchange and queue, deleted afterwards")
    p.add_argument("--port", type=int, default=None, help="service HTTP port (default: a free port)")
    p.add_argument("--service-cmd", default=None,
                   help="command starting the service (default: payment-service next to this python)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the service (repeatable)")
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL for the service")
    p.add_argument("--truncate", action="append", default=None, metavar="TABLE",
                   help="tables emptied before each service start (default: payments)")
    p.add_argument("--keep-data", action="store_true", help="do not truncate tables before a run")
    p.add_argument("--fresh-db", action="store_true",
                   help="startup: drop and recreate the database before the first start (cold migrations)")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=30.0)
    p.add_argument("--profile", action="store_true",
                   help="sample the target with py-spy during the load; top frames go into the summary "
                        "(adds CPU load: do not compare throughput of profiled runs)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--work-dir", default=str(REPO / ".bench"), help="service logs go here")
    p.add_argument("--json-out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    args.truncate = args.truncate or ["payments"]
    args.baseline = args.baseline.resolve()
    if args.compare and args.target != "service":
        p.error("--compare drives both targets; do not combine it with --target baseline")
    if args.isolated:
        tok = secrets.token_hex(3)
        if args.queue == DEFAULT_QUEUE:
            args.queue = f"{DEFAULT_QUEUE}.bench-{tok}"
        if args.exchange == DEFAULT_EXCHANGE:
            args.exchange = f"{DEFAULT_EXCHANGE}.bench-{tok}"
    if (args.compare or args.target == "baseline") and not args.baseline.exists():
        p.error(f"baseline script not found: {args.baseline} (use --baseline PATH)")
    for k in ("n", "n_large", "concurrency"):
        v = getattr(args, k)
        if v is not None and v <= 0:
            p.error(f"--{k.replace('_', '-')} must be positive")
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
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            summary = runner.run(run_all(args))
    except SetupError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError, RuntimeError) as e:
        # e.g. the broker restarted under the run: no summary, one clear line
        print(f"bench: aborted: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
