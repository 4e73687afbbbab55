"""What a run drives: the service process (one variant of it) or the hand-written baseline.

A *variant* is a named way of running a target: `service`, `baseline`, `service+pollers`
(the service while HTTP pollers hit its probes and metrics), or `candidate` (the service
with extra environment, e.g. `PYTHONPATH` pointing at a prototype's work tree).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra import SetupError, ensure_database, free_port, http_status, tail, truncate_tables
from proc_stats import proc_tree

REPO = Path(__file__).resolve().parent.parent
DEFAULT_QUEUE = "payment.stock-confirmed"
DEFAULT_CANCEL_QUEUE = "payment.order-cancelled"
DEFAULT_EXCHANGE = "foodies"
BASELINE_QUEUE = "payment.stock-confirmed"  # hard-wired in the baseline script
BASELINE_EXCHANGE = "foodies"


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "service" or "baseline"
    env: dict[str, str] = field(default_factory=dict)
    pollers: int = 0


class Target:
    name = "?"
    queue = DEFAULT_QUEUE
    exchange = DEFAULT_EXCHANGE

    def __init__(self, args: argparse.Namespace, variant: Variant, concurrency: int, delay_ms: float, label: str):
        self.args = args
        self.variant = variant
        self.concurrency = concurrency
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(args.work_dir) / f"{label}.{variant.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def queues(self) -> list[str]:
        """The queues this target consumes (each with its `.dlq` parking lot)."""
        return [self.queue]

    async def prepare(self) -> None:
        pass

    async def wait_ready(self, t_start: float) -> None:
        raise NotImplementedError

    async def start(self) -> float:
        await self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as logf:  # noqa: ASYNC230 - a local file, opened once per run
            t0 = time.perf_counter()
            # Popen returns as soon as the child exists: the start-up clock starts right before it.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                self.command(),
                env=self.env(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(REPO),
            )
        try:
            await self.wait_ready(t0)
        except BaseException:
            await self.stop()
            raise
        return time.perf_counter() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SetupError(
                f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                f"log {self.log_path}:\n{tail(self.log_path)}"
            )

    async def stop(self) -> dict:
        if self.proc is None:
            return {}
        tree = proc_tree(self.proc.pid)
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = t0 + self.args.stop_timeout
        while self.proc.poll() is None and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a child's exit
            await asyncio.sleep(0.02)
        killed = False
        if self.proc.poll() is None:
            self.proc.kill()
            killed = True
            self.proc.wait()
        for p in tree[1:]:  # children the process left behind
            if os.path.exists(f"/proc/{p}"):  # noqa: ASYNC240 - /proc never blocks
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
        res = {
            "exit_code": self.proc.returncode,
            "shutdown_s": round(time.perf_counter() - t0, 3),
            "killed_after_timeout": killed,
        }
        self.proc = None
        return res


class ServiceTarget(Target):
    name = "service"

    def __init__(self, args: argparse.Namespace, variant: Variant, concurrency: int, delay_ms: float, label: str):
        super().__init__(args, variant, concurrency, delay_ms, label)
        self.queue = args.queue
        self.cancel_queue = args.cancel_queue
        self.exchange = args.exchange
        self.port = args.port or free_port()
        self.db_url = variant.env.get("DB_URL", args.db_url)  # a candidate may bring its own database

    def command(self) -> list[str]:
        if self.args.service_cmd:
            return self.args.service_cmd.split()
        script = Path(sys.executable).parent / "payment-service"
        if script.exists():
            return [str(script)]
        return [sys.executable, "-m", "app"]

    def queues(self) -> list[str]:
        return [self.queue, self.cancel_queue]

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "DB_URL": self.db_url,
                "RABBITMQ_HOST": "127.0.0.1",
                "RABBITMQ_PORT": "5672",
                "RABBITMQ_CONSUME_QUEUE": self.queue,
                "RABBITMQ_CANCEL_QUEUE": self.cancel_queue,
                "RABBITMQ_PUBLISH_EXCHANGE": self.exchange,
                "PAYMENT_DELAY_MS": f"{self.delay_ms:g}",
                "CONSUMER_CONCURRENCY": str(self.concurrency),
                "LOG_LEVEL": self.args.log_level,
                "LOG_FORMAT": "json",
            }
        )
        for kv in self.args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        env.update(self.variant.env)
        return env

    async def prepare(self) -> None:
        await ensure_database(self.db_url)
        if not self.args.keep_data:
            await truncate_tables(self.db_url, self.args.truncate)

    async def wait_ready(self, t0: float) -> None:
        deadline = t0 + self.args.startup_timeout
        while time.perf_counter() < deadline:
            self._check_alive()
            if await http_status(self.port, "/healthz/readiness", timeout=1.0) == 200:
                return
            await asyncio.sleep(0.02)
        raise SetupError(
            f"service not ready after {self.args.startup_timeout}s; log {self.log_path}:\n{tail(self.log_path)}"
        )


class BaselineTarget(Target):
    name = "baseline"
    queue = BASELINE_QUEUE
    exchange = BASELINE_EXCHANGE

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(self.args.baseline),
            "--gateway-delay-ms",
            f"{self.delay_ms:g}",
            "--prefetch",
            str(self.concurrency),
            "--purge",
        ]

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
        raise SetupError(
            f"baseline not ready after {self.args.startup_timeout}s; log {self.log_path}:\n{tail(self.log_path)}"
        )

    def final_stats(self) -> dict | None:
        for line in reversed(self.log_path.read_text(errors="replace").splitlines()):
            if line.startswith('{"stats"'):
                with contextlib.suppress(ValueError):
                    return json.loads(line)["stats"]
        return None


def make_target(args: argparse.Namespace, variant: Variant, concurrency: int, delay_ms: float, label: str) -> Target:
    cls = ServiceTarget if variant.kind == "service" else BaselineTarget
    return cls(args, variant, concurrency, delay_ms, label)
