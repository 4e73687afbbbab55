"""The parking-lot workflow: list parked messages without removing them, replay them to their
consumed queue through the exchange (HTTP and CLI), both lots, one action at a time, bounded
memory, and a replay killed half-way loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import aio_pika
import pytest

from app.messaging.dlq import DlqError, DlqOperations
from tests.conftest import bus_for, running_app
from tests.support import ROOT, VENV_BIN, Bus, Servers, event

JSON = {"Content-Type": "application/json"}
BAD_BODIES = [  # what cannot become an order's outcome is parked (an unusable value fails the payment instead)
    (b"this is not json", None),
    (json.dumps([event()]).encode(), "application/json"),
    (json.dumps({"hello": "world"}).encode(), "application/json"),
]


async def wait_depth(bus: Bus, queue: str, expected: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while (depth := await bus.queue_depth(queue)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} holds {depth} messages, expected {expected}")
        await asyncio.sleep(0.05)


async def put(
    bus: Bus, queue: str, body: bytes, *, headers: dict[str, Any] | None = None, content_type: str | None = None
) -> None:
    """Publish straight into a queue through the default exchange, as an operator would by hand."""
    channel = await bus.connection.channel()
    try:
        await channel.default_exchange.publish(
            aio_pika.Message(
                body, headers=headers, content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=queue,
        )
    finally:
        await channel.close()


async def drain(bus: Bus, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and acknowledge) every message of a queue."""
    channel = await bus.connection.channel()
    try:
        handle = await channel.declare_queue(queue, passive=True)
        taken = []
        while (message := await handle.get(no_ack=False, fail=False)) is not None:
            await message.ack()
            taken.append(message)
        return taken
    finally:
        await channel.close()


async def declare(bus: Bus, *queues: str, replay_bound: bool = True) -> None:
    """Queues as the service declares them: a consumed queue (no `.dlq` suffix) is bound to the
    exchange with its replay key."""
    channel = await bus.connection.channel()
    for name in queues:
        queue = await channel.declare_queue(name, durable=True)
        if replay_bound and not name.endswith(".dlq"):
            await queue.bind(bus.exchange_name, routing_key=f"replay.{name}")
    await channel.close()


async def test_park_list_and_replay(settings_factory: Any) -> None:
    settings = settings_factory()
    dlq = settings.dlq_name
    async with running_app(settings) as app, bus_for(settings) as bus:
        client = app.client
        for body, content_type in BAD_BODIES:
            await bus.publish(body, content_type=content_type)
        await wait_depth(bus, dlq, 3)

        listing = (await client.get("/admin/dlq")).json()
        assert listing["queue"] == dlq
        assert listing["count"] == 3
        assert listing["limit"] == 100
        messages = listing["messages"]
        assert [m["bodySize"] for m in messages] == [len(body) for body, _ in BAD_BODIES]
        assert messages[0]["bodyPreview"] == "this is not json"
        assert [m["category"] for m in messages] == ["invalid_json", "not_an_object", "missing_order_id"]
        assert "orderId" in messages[2]["reason"]
        for message in messages:
            assert message["reason"]
            assert message["parkedAt"].endswith("Z")
            assert message["replayCount"] == 0
            assert message["previousReason"] is None
        reasons = [m["reason"] for m in messages]

        # Listing removes nothing and keeps the order.
        await wait_depth(bus, dlq, 3)
        assert (await client.get("/admin/dlq")).json()["messages"] == messages
        limited = (await client.get("/admin/dlq", params={"limit": 2})).json()
        assert limited["count"] == 3
        assert limited["messages"] == messages[:2]
        for query in ("limit=0", "limit=201", "limit=x", "limit=-1", "max=3", "limit=1&limit=2", "queue=other"):
            assert (await client.get(f"/admin/dlq?{query}")).status_code == 400, query
        for query in ("limit=0", "limit=x", "limit=-1", "limit=1000001", "max=3", "limit=1&limit=2", "queue=x"):
            assert (await client.post(f"/admin/dlq/replay?{query}")).status_code == 400, query
        # A body is honoured or refused, never ignored.
        for body in ({"limit": 0}, {"limit": "1"}, {"limit": 1.5}, {"max": 1}, {"limit": 1, "extra": True}, [1]):
            assert (await client.post("/admin/dlq/replay", json=body)).status_code == 400, body
        assert (await client.post("/admin/dlq/replay?limit=1", json={"limit": 1})).status_code == 400
        assert (await client.post("/admin/dlq/replay", content=b"limit=1")).status_code == 400
        assert (await client.post("/admin/dlq/replay", content=b"{", headers=JSON)).status_code == 400
        await wait_depth(bus, dlq, 3)
        assert (await client.get("/admin/dlq/replay")).status_code == 405
        assert (await client.post("/admin/dlq")).status_code == 405

        # An operator fixed an event and put it into the parking lot by hand.
        fixed = event()
        await put(bus, dlq, json.dumps(fixed).encode())
        await wait_depth(bus, dlq, 4)

        replay = await client.post("/admin/dlq/replay")
        assert replay.status_code == 200, replay.text
        assert replay.json()["replayed"] == 4
        assert replay.json()["queue"] == dlq
        assert replay.json()["target"] == settings.rabbitmq_consume_queue

        await bus.wait_for([fixed["orderId"]])
        assert bus.for_order(fixed["orderId"])[0].routing_key == "payment.succeeded"
        await wait_depth(bus, dlq, 3)
        # Parked again with the same reasons (the consumer works concurrently: any order).
        again = (await client.get("/admin/dlq")).json()["messages"]
        assert sorted(m["reason"] for m in again) == sorted(reasons)
        assert sorted(m["bodySize"] for m in again) == sorted(m["bodySize"] for m in messages)
        assert all(m["previousReason"] == m["reason"] and m["replayCount"] == 1 for m in again)

        # A partial replay (limit in the body) takes the oldest; it parks again at the end.
        partial = (await client.post("/admin/dlq/replay", json={"limit": 1})).json()
        assert (partial["replayed"], partial["remaining"]) in ((1, 2), (1, 3))
        await wait_depth(bus, dlq, 3)
        last = (await client.get("/admin/dlq")).json()["messages"]
        assert [m["reason"] for m in last] == [m["reason"] for m in again[1:] + again[:1]]
        assert [m["replayCount"] for m in last] == [1, 1, 2]


async def test_replay_keeps_the_body_and_headers(settings_factory: Any) -> None:
    settings = settings_factory()
    queue, dlq = settings.rabbitmq_consume_queue, settings.dlq_name
    operations = DlqOperations.from_settings(settings)
    async with bus_for(settings) as bus:
        try:
            await declare(bus, queue, dlq)
            headers = {
                "x-rejection-reason": "orderId: bad",
                "x-rejection-category": "invalid_value",
                "x-rejected-at": "2024-01-15T10:30:00.000Z",
                "x-original-queue": queue,
                "traceparent": "00-abc-def-01",
            }
            await put(bus, dlq, b"\x00\xffbinary", headers=headers, content_type="application/octet-stream")
            listing = await operations.list()
            assert listing.count == 1
            assert listing.messages[0].body_size == 8
            assert listing.messages[0].body_preview.endswith("binary")

            result = await operations.replay()
            assert (result.replayed, result.remaining) == (1, 0)
            [copy] = await drain(bus, queue)
            assert copy.body == b"\x00\xffbinary"
            assert copy.content_type == "application/octet-stream"
            assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert copy.headers == {
                "traceparent": "00-abc-def-01",
                "x-previous-rejection-reason": "orderId: bad",
                "x-replay-count": 1,
            }
            assert (await operations.replay()).replayed == 0
        finally:
            await bus.delete(queue, dlq, exchange=True)


async def test_replay_without_the_consumed_queue_keeps_the_message(settings_factory: Any) -> None:
    settings = settings_factory()
    operations = DlqOperations.from_settings(settings)
    async with bus_for(settings) as bus:
        try:
            assert (await operations.list()).count == 0  # no parking lot yet: nothing parked
            assert (await operations.replay()).replayed == 0
            await declare(bus, settings.dlq_name)
            await put(bus, settings.dlq_name, b"{}")
            with pytest.raises(DlqError, match="does not exist"):
                await operations.replay()
            await wait_depth(bus, settings.dlq_name, 1)
        finally:
            await bus.delete(settings.dlq_name, exchange=True)


def cli_env(servers: Servers, settings: Any, **overrides: Any) -> dict[str, str]:
    """The command line's environment: the same queue and exchange as `settings`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENT_", "RABBITMQ_", "DB_", "DLQ_"))}
    environment.update(
        servers.env(
            rabbitmq_consume_queue=settings.rabbitmq_consume_queue,
            rabbitmq_publish_exchange=settings.rabbitmq_publish_exchange,
            **overrides,
        )
    )
    return environment


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "payment-service"), "dlq", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_cli_list_and_replay(servers: Servers, settings_factory: Any) -> None:
    settings = settings_factory()
    queue, dlq = settings.rabbitmq_consume_queue, settings.dlq_name
    env = cli_env(servers, settings)
    async with bus_for(settings) as bus:
        try:
            await declare(bus, queue, dlq)
            bodies = [f"parked-{i}".encode() for i in range(5)]
            for body in bodies:
                await put(bus, dlq, body, headers={"x-rejection-reason": "invalid JSON: expected value"})

            code, out, err = await cli(env, "list", "--limit", "3")
            assert code == 0, err
            listing = json.loads(out)
            assert listing["count"] == 5
            assert len(listing["messages"]) == 3
            assert [m["bodyPreview"] for m in listing["messages"]] == ["parked-0", "parked-1", "parked-2"]
            assert listing["messages"][0]["reason"] == "invalid JSON: expected value"

            code, out, err = await cli(env, "replay", "--limit", "2")
            assert code == 0, err
            assert json.loads(out) == {"queue": dlq, "target": queue, "replayed": 2, "remaining": 3}
            code, out, err = await cli(env, "replay")
            assert code == 0, err
            assert json.loads(out)["replayed"] == 3
            assert json.loads(out)["remaining"] == 0
            assert [m.body for m in await drain(bus, queue)] == bodies

            code, _, err = await cli(env, "replay", "--limit", "0")
            assert code == 2
            assert "positive integer" in err
        finally:
            await bus.delete(queue, dlq, exchange=True)
    code, _, err = await cli(cli_env(servers, settings, rabbitmq_port="1"), "list")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("dlq list failed:")


async def test_replay_killed_half_way_loses_nothing(servers: Servers, settings_factory: Any) -> None:
    settings = settings_factory()
    queue, dlq = settings.rabbitmq_consume_queue, settings.dlq_name
    bodies = {json.dumps(event(card="12")).encode() for _ in range(30)}
    async with bus_for(settings) as bus:
        try:
            await declare(bus, queue, dlq)
            for body in bodies:
                await put(bus, dlq, body, headers={"x-rejection-reason": "paymentMethod.cardLastFour: bad"})

            # Killed right after the 7th copy was confirmed, before its original was acknowledged.
            code, _, err = await cli(
                cli_env(servers, settings, payment_fault_inject="replay_after_publish:7"), "replay"
            )
            assert code == -signal.SIGKILL, err
            await wait_depth(bus, queue, 7)
            await wait_depth(bus, dlq, 30 - 6)  # the 7th is in both queues: a duplicate, not a loss

            # Every body is somewhere; then a clean replay moves the rest.
            code, out, err = await cli(cli_env(servers, settings), "replay")
            assert code == 0, err
            assert json.loads(out)["replayed"] == 24
            moved = [m.body for m in await drain(bus, queue)]
            assert len(moved) == 31
            assert set(moved) == bodies
            assert await bus.queue_depth(dlq) == 0
        finally:
            await bus.delete(queue, dlq, exchange=True)


async def test_admin_dlq_routes_need_a_token(settings_factory: Any) -> None:
    token = uuid.uuid4().hex
    async with running_app(settings_factory(admin_token=token)) as app:
        assert (await app.client.get("/admin/dlq")).status_code == 401
        assert (await app.client.post("/admin/dlq/replay")).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        assert (await app.client.get("/admin/dlq", headers=headers)).json()["count"] == 0
        assert (await app.client.post("/admin/dlq/replay", headers=headers)).json()["replayed"] == 0
