"""The chaos run's own view of the system: an AMQP client that publishes like the ordering service and records every
outcome event (on a durable queue bound before anything is sent, so no event is missed across a broker restart), the
parking lots, the payment rows, and the wait for quiescence."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from contextlib import suppress
from typing import Any

import aio_pika
import asyncpg

from chaos_cluster import Vhost
from chaos_plan import Order

EXCHANGE = "foodies"  # the service's default names: the run has a vhost of its own
STOCK_QUEUE, CANCEL_QUEUE = "payment.stock-confirmed", "payment.order-cancelled"
ROUTES = {"stock_confirmed": "order.stock-confirmed", "order_cancelled": "order.cancelled"}
LOTS = {"stock_confirmed": f"{STOCK_QUEUE}.dlq", "order_cancelled": f"{CANCEL_QUEUE}.dlq"}
OUTCOME_KEYS = ("payment.succeeded", "payment.failed", "payment.refunded")
ANNOUNCES = {"SUCCEEDED": "payment.succeeded", "FAILED": "payment.failed", "REFUNDED": "payment.refunded"}


class ChaosBus:
    def __init__(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        self.connection = connection
        self.events: list[tuple[str, bytes]] = []  # every delivery, repeats included
        self.observed: set[tuple[int, str]] = set()

    @classmethod
    async def open(cls, url: str) -> ChaosBus:
        bus = cls(await aio_pika.connect_robust(url))
        channel = await bus.connection.channel()  # publisher confirms on
        bus.exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        observer = await channel.declare_queue("chaos.outcomes", durable=True)
        for key in OUTCOME_KEYS:
            await observer.bind(bus.exchange, key)
        await observer.consume(bus._on_outcome)
        return bus

    async def _on_outcome(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.events.append((message.routing_key or "", message.body))
        with suppress(ValueError, TypeError, KeyError):  # not an outcome of ours: the audit reports it
            self.observed.add((int(json.loads(message.body)["orderId"]), message.routing_key or ""))
        with suppress(Exception):  # a lost ack only means a repeat, which the audit allows
            await message.ack()

    async def send(self, role: str, body: bytes) -> None:
        """Persistent, confirmed; retried until the broker takes it (a repeat is allowed: consumers are idempotent)."""
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        while True:
            try:
                await self.exchange.publish(message, routing_key=ROUTES[role], timeout=10)
                return
            except Exception:  # noqa: BLE001 - the broker is restarting: try again shortly
                await asyncio.sleep(0.5)

    async def parked(self) -> dict[str, list[tuple[bytes, dict[str, Any]]]]:
        """Every message in the two parking lots, taken out (the vhost goes away after the run)."""
        found: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        for role, name in LOTS.items():
            found[role] = []
            channel = await self.connection.channel()
            try:
                queue = await channel.declare_queue(name, durable=True, passive=True)
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    found[role].append((message.body, dict(message.headers or {})))
            except aio_pika.exceptions.ChannelClosed:
                pass  # no such lot: nothing parked there
            finally:
                with suppress(Exception):
                    await channel.close()
        return found

    @staticmethod
    async def rows(dsn: str, order_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        connection = await asyncpg.connect(dsn)
        try:
            found = await connection.fetch("SELECT * FROM payments WHERE order_id = ANY($1::bigint[])", order_ids)
        finally:
            await connection.close()
        rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in found:
            rows[row["order_id"]].append(dict(row))
        return dict(rows)

    async def close(self) -> None:
        with suppress(Exception):
            await self.connection.close()


async def _state(dsn: str, vhost: Vhost, bus: ChaosBus, order_ids: list[int]) -> dict[str, Any]:
    """What is still moving: unfinished rows, owed refunds, unpublished or unobserved outcomes, queued messages."""
    rows = await bus.rows(dsn, order_ids)
    single = [found[0] for found in rows.values()]
    unfinished = [r["order_id"] for r in single if r["status"] in ("PENDING", "PROCESSING")]
    owed = [r["order_id"] for r in single if r["status"] == "SUCCEEDED" and r["refund_requested_at"] is not None]
    announced = [
        r for r in single if r["status"] in ANNOUNCES and not (r["status"] == "SUCCEEDED" and r["cancelled_at"])
    ]
    unpublished = [r["order_id"] for r in announced if r["published_at"] is None]
    unobserved = [r["order_id"] for r in announced if (r["order_id"], ANNOUNCES[r["status"]]) not in bus.observed]
    depths = await vhost.depths()
    return {
        "missing_rows": len(order_ids) - len(rows),
        "unfinished": len(unfinished),
        "refunds_owed": len(owed),
        "unpublished": len(unpublished),
        "unobserved": len(unobserved),
        "queued": None if depths is None else depths.get(STOCK_QUEUE, 0) + depths.get(CANCEL_QUEUE, 0),
        "samples": {"unfinished": unfinished[:5], "owed": owed[:5], "unobserved": unobserved[:5]},
    }


async def settle(dsn: str, vhost: Vhost, bus: ChaosBus, orders: list[Order], timeout: float) -> dict[str, Any]:
    """Wait (at most `timeout`) until nothing moves: two polls in a row with every count at zero."""
    started = time.monotonic()
    order_ids = [order.order_id for order in orders]
    calm, state = 0, {}
    while time.monotonic() - started < timeout:
        try:
            state = await _state(dsn, vhost, bus, order_ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            state = {"error": repr(error)}
        counts = [v for k, v in state.items() if k != "samples"]
        calm = calm + 1 if counts and all(v == 0 for v in counts) else 0
        if calm >= 2:
            return {"quiescent": True, "seconds": round(time.monotonic() - started, 1), "last": state}
        await asyncio.sleep(1.0)
    return {"quiescent": False, "seconds": round(time.monotonic() - started, 1), "last": state}


class CancelWatch:
    """Sends the cancellations that follow what happens: "during" as soon as the order's row is seen PROCESSING
    (the charge is in flight; polled every 50 ms), "after" a moment after its outcome event was seen. An order
    whose row is final before it was seen PROCESSING is cancelled all the same (then after its outcome)."""

    def __init__(self, dsn: str, bus: ChaosBus, orders: list[Order], rng: Any) -> None:
        self.dsn, self.bus, self.rng = dsn, bus, rng
        self.during = {o.order_id: o for o in orders if o.cancel == "during"}
        self.after = {o.order_id: o for o in orders if o.cancel == "after"}
        self.sent: set[int] = set()
        self._later: list[asyncio.Task[None]] = []

    @property
    def waiting(self) -> int:
        return len(self.during) + len(self.after) + sum(not t.done() for t in self._later)

    async def run(self, until: float) -> None:
        """Until every cancellation is out or the monotonic time `until`."""
        connection: asyncpg.Connection | None = None
        while (self.during or self.after) and time.monotonic() < until:
            try:
                connection = connection or await asyncpg.connect(self.dsn)
                await self._poll(connection)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection = None  # the database restarts: connect again next time
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.05)
        if connection is not None:
            with suppress(Exception):
                await connection.close()
        await asyncio.gather(*self._later)

    async def _poll(self, connection: asyncpg.Connection) -> None:
        if self.during:
            rows = await connection.fetch(
                "SELECT order_id FROM payments WHERE order_id = ANY($1::bigint[]) AND status <> 'PENDING'",
                list(self.during),
            )
            for row in rows:
                order = self.during.pop(row["order_id"])
                self._later.append(asyncio.create_task(self._send(order, 0.0)))
        observed = {order_id for order_id, _ in self.bus.observed}
        for order_id in [o for o in self.after if o in observed]:
            self._later.append(asyncio.create_task(self._send(self.after.pop(order_id), self.rng.uniform(0, 2))))

    async def _send(self, order: Order, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.bus.send("order_cancelled", order.cancelled())
        self.sent.add(order.order_id)
