"""The moving parts of a chaos run: the fake gateway and the service replicas as subprocesses, a RabbitMQ vhost of
the run's own, and the disruptions (kill -9 of a replica, broker stop/start, PostgreSQL restart, gateway outage)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(*command: str, timeout: float = 120.0) -> tuple[int, str]:
    """A command's exit code and output (stdout and stderr together), without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        return -1, f"{command[0]} timed out after {timeout}s"
    return process.returncode or 0, out.decode(errors="replace").strip()


class Process:
    """A subprocess with its log file; `kill` is SIGKILL, `stop` SIGTERM then SIGKILL."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENT_", "RABBITMQ_", "DB_"))}
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(self.command, env={**clean, **self.env}, stdout=log, stderr=log, cwd=REPO)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.alive and self.popen:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    async def stop(self, grace: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


async def wait_http(url: str, process: Process, timeout: float) -> None:
    """Until `url` answers 200 (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not process.alive:
                raise RuntimeError(f"{process.name} exited early; see {process.log}")
            with suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{process.name} did not answer {url} within {timeout}s; see {process.log}")


class FakeGateway:
    """The project's fake HTTP payment gateway in a process of its own."""

    def __init__(self, api_key: str, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "app.gateway.fake_server", "--port", str(self.port), "--api-key", api_key]
        self.process = Process("fake-gateway", command, {}, work / "fake-gateway.log")

    async def start(self) -> None:
        self.process.start()
        await wait_http(f"{self.url}/_health", self.process, 30)

    async def control(self, **settings: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10.0) as client:
            return (await client.post(f"{self.url}/_control", json=settings)).json()

    async def audit(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=120.0) as client:
            return (await client.get(f"{self.url}/_audit")).json()


class Replicas:
    """N service processes on one configuration; a supervisor restarts any that is down."""

    def __init__(self, count: int, env: dict[str, str], work: Path) -> None:
        self.members = []
        for n in range(count):
            port = free_port()
            log = work / f"replica-{n}.log"
            self.members.append(
                Process(f"replica-{n}", [str(BIN / "payment-service")], {**env, "PORT": str(port)}, log)
            )
        self.kills = 0
        self.unplanned_exits: Counter[str] = Counter()  # exit codes of replicas that died without our kill
        self._killed: set[str] = set()
        self._supervising: asyncio.Task[None] | None = None

    def url(self, member: Process) -> str:
        return f"http://127.0.0.1:{member.env['PORT']}"

    async def start(self, timeout: float = 60.0) -> None:
        for member in self.members:
            member.start()
        await asyncio.gather(*(wait_http(f"{self.url(m)}/healthz/readiness", m, timeout) for m in self.members))

    def supervise(self, restart_after_s: float) -> None:
        self._supervising = asyncio.create_task(self._supervise(restart_after_s))

    async def _supervise(self, restart_after_s: float) -> None:
        down_since: dict[str, float] = {}
        while True:
            for member in self.members:
                if member.alive:
                    continue
                if member.name not in down_since:
                    down_since[member.name] = time.monotonic()
                    if member.name not in self._killed and member.popen is not None:
                        self.unplanned_exits[str(member.popen.returncode)] += 1
                    self._killed.discard(member.name)
                elif time.monotonic() - down_since[member.name] >= restart_after_s:
                    del down_since[member.name]
                    member.start()
            await asyncio.sleep(0.2)

    def kill_one(self, rng: random.Random) -> str | None:
        alive = [m for m in self.members if m.alive]
        if not alive:
            return None
        victim = rng.choice(alive)
        self._killed.add(victim.name)
        victim.kill()
        self.kills += 1
        return victim.name

    async def wait_all_ready(self, timeout: float) -> bool:
        """Every replica up and ready (the supervisor restarts the dead ones)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                ready = 0
                for member in self.members:
                    with suppress(httpx.HTTPError):
                        ready += (await client.get(f"{self.url(member)}/healthz/readiness")).status_code == 200
                if ready == len(self.members):
                    return True
                await asyncio.sleep(0.5)
        return False

    async def stop(self) -> list[int | None]:
        if self._supervising is not None:
            self._supervising.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervising
        return list(await asyncio.gather(*(m.stop() for m in self.members)))


class Vhost:
    """A RabbitMQ vhost of the run's own (the service's default names inside), deleted afterwards."""

    def __init__(self, name: str, user: str) -> None:
        self.name, self.user = name, user

    async def create(self) -> None:
        for command in (("add_vhost", self.name), ("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")):
            code, out = await run("rabbitmqctl", *command)
            if code != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(command)}: {out}")

    async def depths(self) -> dict[str, int] | None:
        """Messages (ready + unacknowledged) per queue, or None while the broker does not answer."""
        code, out = await run("rabbitmqctl", "-q", "list_queues", "-p", self.name, "name", "messages", timeout=30)
        if code != 0:
            return None
        found = {}
        for line in out.splitlines():
            name, _, count = line.rpartition("\t")
            if count.isdigit():
                found[name] = int(count)
        return found

    async def delete(self) -> None:
        await run("rabbitmqctl", "delete_vhost", self.name)


async def restart_broker(down_s: float) -> dict[str, Any]:
    """`rabbitmqctl stop_app`, a pause, `start_app`: every connection drops, durable queues stay."""
    started = time.monotonic()
    stopped, out = await run("rabbitmqctl", "stop_app")
    await asyncio.sleep(down_s)
    code, out2 = await run("rabbitmqctl", "start_app")
    await run("rabbitmqctl", "await_startup", timeout=120)
    return {"ok": stopped == 0 and code == 0, "seconds": round(time.monotonic() - started, 1), "output": out + out2}


async def postgres_cluster(port: int) -> tuple[str, str] | None:
    """(version, name) of the local cluster on `port` (pg_lsclusters; /etc/postgresql has them too)."""
    code, out = await run("pg_lsclusters", "--no-header")
    for line in out.splitlines() if code == 0 else []:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(port):
            return fields[0], fields[1]
    return None


async def restart_postgres(port: int, down_s: float) -> dict[str, Any]:
    """Stop the cluster, a pause, start it again (`pg_ctlcluster --skip-systemctl-redirect VERSION NAME stop|start`)."""
    cluster = await postgres_cluster(port)
    if cluster is None:
        return {"ok": False, "output": f"no local PostgreSQL cluster on port {port}"}
    started = time.monotonic()
    base = ("pg_ctlcluster", "--skip-systemctl-redirect", *cluster)
    stopped, out = await run(*base, "stop")  # fast mode: sessions are cut
    await asyncio.sleep(down_s)
    code, out2 = await run(*base, "start")
    return {
        "ok": stopped == 0 and code == 0,
        "cluster": "/".join(cluster),
        "seconds": round(time.monotonic() - started, 1),
        "output": out + out2,
    }
