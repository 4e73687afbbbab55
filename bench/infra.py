"""The benchmark's plumbing: errors and progress lines, ports, the database and RabbitMQ
admin operations, and reading a service log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg


class SetupError(RuntimeError):
    """The run cannot start or go on (not a measurement result): exit status 2."""


def log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------ service log
_LEVEL_RE = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b")


def _line_level(line: str) -> str | None:
    """The level of one (JSON or text) log line."""
    if not line.startswith("{"):
        m = _LEVEL_RE.search(line)
        return m.group(1) if m else None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    lv = rec.get("level") or rec.get("levelname") or rec.get("severity")
    if isinstance(lv, dict):
        lv = lv.get("name")
    if lv is None and isinstance(rec.get("record"), dict):  # loguru serialize=True
        lv = rec["record"].get("level", {}).get("name")
    level = str(lv).upper() if lv else None
    return "WARNING" if level == "WARN" else level


def log_levels(path: Path) -> dict:
    """Count WARNING/ERROR/CRITICAL records in a log and keep a few errors."""
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0}
    samples: list[str] = []
    lines = 0
    try:
        fh = open(path, errors="replace")  # noqa: SIM115 - closed by the with below
    except OSError:
        return {}
    with fh:
        for line in fh:
            lines += 1
            level = _line_level(line)
            if level in counts:
                counts[level] += 1
                if level != "WARNING" and len(samples) < 3:
                    samples.append(line.strip()[:400])
    return {
        "lines": lines,
        "warnings": counts["WARNING"],
        "errors": counts["ERROR"] + counts["CRITICAL"],
        "error_samples": samples,
    }


# ------------------------------------------------------------ broker & database
def admin_dsn(db_url: str) -> tuple[str, str]:
    """(maintenance DSN on db 'postgres', database name) from the service's DB_URL."""
    url = db_url.removeprefix("jdbc:").replace("postgresql+asyncpg://", "postgresql://", 1)
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "postgres"
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, "")), db


async def ensure_database(db_url: str, drop: bool = False) -> None:
    dsn, db = admin_dsn(db_url)
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


async def truncate_tables(db_url: str, tables: list[str]) -> list[str]:
    """Empty the service's data tables (if the migrations created them already)."""
    dsn = db_url.removeprefix("jdbc:").replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    done = []
    try:
        await conn.execute("SET lock_timeout = '5s'")
        for table in tables:
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

    async def __aenter__(self) -> Broker:
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
                raise SetupError(
                    f"queue {name!r} has {state['consumers']} consumer(s) besides this benchmark; "
                    "stop them first (or use --isolated for service-only runs)"
                )
            await asyncio.sleep(0.2)

    async def purge(self, name: str) -> int | None:
        ch = await self.conn.channel()
        try:
            q = await ch.declare_queue(name, passive=True)
            res = await q.purge()
            return res.message_count
        except Exception:  # noqa: BLE001 - an absent queue has nothing to purge
            return None
        finally:
            with contextlib.suppress(Exception):
                await ch.close()

    async def delete(self, queues: list[str], exchange: str | None) -> None:
        ch = await self.conn.channel()
        try:
            raw = await ch.get_underlay_channel()
            for q in queues:
                with contextlib.suppress(Exception):
                    await raw.queue_delete(q)
            if exchange:
                with contextlib.suppress(Exception):
                    await raw.exchange_delete(exchange)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()
