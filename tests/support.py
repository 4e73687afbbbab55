"""Test helpers: where the real servers are, event factories, an AMQP client that publishes
like the Kotlin services and collects outcomes, and the service as a real subprocess."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

_order_ids = itertools.count(int(time.time() * 1000) * 1000 + os.getpid() % 1000)


def next_order_id() -> int:
    return next(_order_ids)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(order_id: int | None = None, *, card: str | None = "4242", **overrides: Any) -> dict[str, Any]:
    """An OrderStockConfirmedEvent as the Kotlin ordering service sends it."""
    body: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "orderId": order_id if order_id is not None else next_order_id(),
        "buyerId": "user-uuid-123",
        "totalAmount": "49.99",
        "currency": "USD",
        "paymentMethod": {
            "type": "CREDIT_CARD",
            "cardLastFour": card,
            "cardBrand": "VISA",
            "cardHolderName": "John Doe",
            "expirationMonth": 12,
            "expirationYear": 2030,
        },
        "occurredAt": "2024-01-15T10:30:00Z",
    }
    body.update(overrides)
    return body


SUCCEEDED_KEYS = {"eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"}
FAILED_KEYS = {"eventId", "orderId", "failureReason", "failureCode", "occurredAt"}
REFUNDED_KEYS = {
    "eventId",
    "orderId",
    "paymentId",
    "transactionId",
    "refundId",
    "amount",
    "currency",
    "reason",
    "refundedAt",
}


@dataclass
class Servers:
    db_admin_dsn: str  # asyncpg DSN of a maintenance database
    db_host: str
    db_port: int
    db_user: str
    db_password: str | None
    db_name: str
    amqp_url: str
    amqp_host: str
    amqp_port: int

    def db_url(self) -> str:
        return f"jdbc:postgresql://{self.db_host}:{self.db_port}/{self.db_name}"

    def dsn(self) -> str:
        auth = self.db_user + (f":{self.db_password}" if self.db_password else "")
        return f"postgresql://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"

    def env(self, **overrides: Any) -> dict[str, str]:
        """Environment for the service, on fresh queue and exchange names."""
        suffix = uuid.uuid4().hex[:8]
        env = {
            "DB_URL": self.db_url(),
            "DB_USERNAME": self.db_user,
            "RABBITMQ_HOST": self.amqp_host,
            "RABBITMQ_PORT": str(self.amqp_port),
            "RABBITMQ_CONSUME_QUEUE": f"test-{suffix}.stock-confirmed",
            "RABBITMQ_CANCEL_QUEUE": f"test-{suffix}.order-cancelled",
            "RABBITMQ_PUBLISH_EXCHANGE": f"test-{suffix}",
            "PAYMENT_DELAY_MS": "0",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
        }
        if self.db_password:
            env["DB_PASSWORD"] = self.db_password
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env


@dataclass
class Outcome:
    routing_key: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, Any]
    delivery_mode: int | None
    content_type: str | None


@dataclass
class Bus:
    """Publishes to the exchange like the Kotlin services and records every outcome event."""

    amqp_url: str
    exchange_name: str
    queue_name: str
    connection: aio_pika.abc.AbstractRobustConnection | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Bus:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self.connection.channel()
        self.exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        # Durable and named, so that outcomes published while this client reconnects after a
        # broker restart are kept for it.
        self.results = await channel.declare_queue(f"{self.queue_name}.observer-{uuid.uuid4().hex[:6]}", durable=True)
        for key in ("payment.succeeded", "payment.failed", "payment.refunded"):
            await self.results.bind(self.exchange, key)
        await self.results.consume(self._on_outcome)
        return self

    async def _on_outcome(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.outcomes.append(
                Outcome(
                    message.routing_key or "",
                    json.loads(message.body),
                    message.body,
                    dict(message.headers or {}),
                    int(message.delivery_mode) if message.delivery_mode else None,
                    message.content_type,
                )
            )
            self._arrived.set()

    async def publish(
        self,
        body: dict[str, Any] | bytes,
        *,
        content_type: str | None = None,
        headers: dict | None = None,
        routing_key: str = "order.stock-confirmed",
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.exchange.publish(
            aio_pika.Message(
                raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type=content_type, headers=headers
            ),
            routing_key=routing_key,
        )

    async def cancel(self, order_id: int, reason: str = "Customer changed their mind") -> None:
        """An OrderCancelledEvent as the Kotlin ordering service sends it."""
        body = {
            "orderId": order_id,
            "buyerId": "user-uuid-123",
            "reason": reason,
            "cancelledAt": "2024-01-15T10:31:00Z",
        }
        await self.publish(body, routing_key="order.cancelled")

    def for_order(self, order_id: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.body.get("orderId") == order_id]

    async def wait_for(self, order_ids: list[int] | set[int], timeout: float = 30.0, each: int = 1) -> None:
        wanted = set(order_ids)
        deadline = time.monotonic() + timeout
        while True:
            counts: dict[int, int] = {}
            for o in self.outcomes:
                oid = o.body.get("orderId")
                if oid in wanted:
                    counts[oid] = counts.get(oid, 0) + 1
            if all(counts.get(oid, 0) >= each for oid in wanted):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(oid for oid in wanted if counts.get(oid, 0) < each)
                raise AssertionError(f"no outcome for {len(missing)} orders within {timeout}s: {missing[:10]}")
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))

    async def queue_depth(self, name: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, durable=True, passive=True)
            return queue.declaration_result.message_count
        finally:
            await channel.close()

    async def get_parked(self, dlq: str, limit: int = 100) -> list[aio_pika.abc.AbstractIncomingMessage]:
        channel = await self.connection.channel()
        queue = await channel.declare_queue(dlq, durable=True, passive=True)
        messages = []
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            messages.append(message)
        for message in messages:
            await message.nack(requeue=True)
        await channel.close()
        return messages

    async def delete(self, *queues: str, exchange: bool = True) -> None:
        channel = await self.connection.channel()
        for name in queues:
            try:
                await channel.queue_delete(name)
            except Exception:  # noqa: BLE001 - cleanup
                channel = await self.connection.channel()
        if exchange:
            with suppress(Exception):  # cleanup: already gone is fine
                await channel.exchange_delete(self.exchange_name)

    async def close(self) -> None:
        if self.connection is not None:
            try:
                channel = await self.connection.channel()
                await channel.queue_delete(self.results.name)
            except Exception:  # noqa: BLE001 - cleanup
                pass
            await self.connection.close()


class ServiceProcess:
    """The service started as the README starts it (`payment-service`), as a subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env.setdefault("PORT", str(free_port())))
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENT_", "RABBITMQ_", "DB_"))}
        environment.update(self.env)
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process; closed in stop()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "payment-service")],
            env=environment,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    async def wait_ready(self, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process and self.process.poll() is not None:
                    raise AssertionError(f"service exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if (await client.get(f"{self.url}/healthz/readiness")).status_code == 200:
                        return time.monotonic() - self.started_at
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"service not ready within {timeout}s: {self.log_tail()}")

    async def readiness(self) -> int:
        async with httpx.AsyncClient(timeout=5.0) as client:
            try:
                return (await client.get(f"{self.url}/healthz/readiness")).status_code
            except httpx.HTTPError:
                return -1

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    async def wait_exit(self, timeout: float = 40.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process and self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"service did not exit within {timeout}s")
            await asyncio.sleep(0.1)
        return self.process.returncode if self.process else 0

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"message": raw, "level": "RAW"})
        return lines

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.terminate()
        if self.process:
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if getattr(self, "log_file", None):
            self.log_file.close()


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's /metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(f"{url}/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


class TcpProxy:
    """A loopback TCP forwarder that can be switched on later: a server that "comes up"."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.base_events.Server | None = None

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


async def payment_record(url: str, order_id: int) -> dict[str, Any] | None:
    """GET /payments/{orderId} of a service at `url`: the record, or None when there is none."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.get(f"{url}/payments/{order_id}")
    return answer.json() if answer.status_code == 200 else None


async def wait_for_status(url: str, order_id: int, status: str, timeout: float = 15.0) -> dict[str, Any]:
    """The order's payment record once it has `status` (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = await payment_record(url, order_id)
        if found is not None and found["status"] == status:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {status} within {timeout}s: {found}")


async def wait_for_metric(urls: list[str], name: str, at_least: float, timeout: float = 15.0, **labels: str) -> float:
    """The sample summed over the services at `urls`, once it reaches `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        total = sum([metric_sum(await scrape(url), name, **labels) for url in urls])
        if total >= at_least:
            return total
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} stayed at {total} within {timeout}s, expected {at_least}")
        await asyncio.sleep(0.1)


async def run_command(env: dict[str, str], *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """`payment-service ARGS` with a service's environment, as (exit code, stdout, stderr). Asynchronous,
    so that servers running in the caller's event loop (a fake gateway) keep answering meanwhile."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENT_", "RABBITMQ_", "DB_"))}
    process = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "payment-service"),
        *args,
        env={**environment, **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(), err.decode()
