"""The service under the Foodies RabbitMQ permission: a user whose configure, write and read
are all `^(payment\\.|foodies$)`, on a vhost of its own with the production names (exchange
`foodies`, queues `payment.*`). Consuming, publishing, parking, replaying and start-up
declarations must all work, and a channel error must not stop consumption."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from typing import Any

import aio_pika
import pytest

from tests.support import VENV_BIN, Bus, Servers, event

PERMISSION = r"^(payment\.|foodies$)"


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def foodies_user(servers: Servers) -> Any:
    """A fresh vhost with guest (for the test's own client) and a Foodies-like user."""
    suffix = uuid.uuid4().hex[:8]
    vhost, user, password = f"foodies-{suffix}", f"payment-service-{suffix}", uuid.uuid4().hex
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    rabbitmqctl("add_user", user, password)
    rabbitmqctl("set_permissions", "-p", vhost, user, PERMISSION, PERMISSION, PERMISSION)
    yield vhost, user, password
    rabbitmqctl("delete_user", user)
    rabbitmqctl("delete_vhost", vhost)


def service_env(servers: Servers, vhost: str, user: str, password: str, **overrides: Any) -> dict[str, str]:
    env = servers.env(**overrides)
    env.update(
        RABBITMQ_VHOST=vhost,
        RABBITMQ_USERNAME=user,
        RABBITMQ_PASSWORD=password,
        RABBITMQ_CONSUME_QUEUE="payment.stock-confirmed",
        RABBITMQ_CANCEL_QUEUE="payment.order-cancelled",
        RABBITMQ_PUBLISH_EXCHANGE="foodies",
    )
    return env


async def consumers_on(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        return declared.declaration_result.consumer_count
    finally:
        await connection.close()


async def test_everything_works_as_the_foodies_user(service_process, servers: Servers, foodies_user) -> None:
    vhost, user, password = foodies_user
    env = service_env(servers, vhost, user, password)
    service = service_process(env)
    await service.wait_ready()
    url = f"amqp://guest:guest@{servers.amqp_host}:{servers.amqp_port}/{vhost}"
    bus = await Bus(url, "foodies", "payment.stock-confirmed").start()
    try:
        good, poison = event(card="1111"), b"{not json"
        await bus.publish(good)
        await bus.publish(poison)
        await bus.wait_for([good["orderId"]])
        [outcome] = bus.for_order(good["orderId"])
        assert outcome.routing_key == "payment.succeeded"
        await asyncio.sleep(1)
        parked = await bus.get_parked("payment.stock-confirmed.dlq")
        assert [m.body for m in parked] == [poison]
        assert parked[0].headers["x-rejection-reason"]
        # The operator's replay, as the same user, from the command line.
        replay = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "payment-service"), "dlq", "replay"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["replayed"] == 1
        await asyncio.sleep(2)
        assert [m.body for m in await bus.get_parked("payment.stock-confirmed.dlq")] == [poison]  # parked again
        assert await consumers_on(url, "payment.stock-confirmed") == 1
        assert await consumers_on(url, "payment.order-cancelled") == 1
        assert await service.readiness() == 200
        assert "ACCESS_REFUSED" not in service.log_tail(400)
    finally:
        await bus.close()


async def test_a_channel_error_does_not_stop_consumption(service_process, servers: Servers, foodies_user) -> None:
    vhost, user, password = foodies_user
    env = service_env(servers, vhost, user, password, payment_fault_inject="channel_error:1")
    service = service_process(env)
    await service.wait_ready()
    url = f"amqp://guest:guest@{servers.amqp_host}:{servers.amqp_port}/{vhost}"
    bus = await Bus(url, "foodies", "payment.stock-confirmed").start()
    try:
        first, second = event(), event()
        await bus.publish(first)  # its handling makes the broker close the consumers' channel
        await asyncio.sleep(1)
        await bus.publish(second)
        await bus.wait_for([first["orderId"], second["orderId"]], timeout=30)
        assert await consumers_on(url, "payment.stock-confirmed") == 1
        assert await consumers_on(url, "payment.order-cancelled") == 1
        assert await service.readiness() == 200
        assert "provoking a channel error" in service.log_tail(400)  # the fault did happen
    finally:
        await bus.close()
