"""The outcomes' own AMQP channel against the real RabbitMQ: the message as it arrives, a
confirm for every publish, an error for what the broker could not take, and a publish after
the connection was lost."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from app.messaging.outbound import OutcomeChannel

KEY = "payment.succeeded"


@pytest.fixture
async def exchange(servers):
    """A fresh topic exchange with one queue bound to `payment.succeeded`."""
    name = f"test-outcomes-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(servers.amqp_url)
    channel = await connection.channel()
    declared = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{name}.observer", durable=True)
    await queue.bind(declared, KEY)
    yield name, queue
    await queue.delete(if_unused=False, if_empty=False)
    await declared.delete()
    await connection.close()


async def _one(queue) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(100):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError("nothing arrived")


async def test_an_outcome_arrives_persistent_as_json_with_its_event_id(servers, exchange) -> None:
    name, queue = exchange
    outcomes = OutcomeChannel(servers.amqp_url, name)
    body = json.dumps({"eventId": "e", "orderId": 1}).encode()
    try:
        await outcomes.send(KEY, body, "0a8f1c2e-5d7b-5e8a-9c1d-2b3f4a5e6d7c")  # opens lazily
    finally:
        await outcomes.close()
    message = await _one(queue)
    assert message.body == body and message.routing_key == KEY
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.message_id == message.correlation_id == "0a8f1c2e-5d7b-5e8a-9c1d-2b3f4a5e6d7c"
    assert message.timestamp is not None and not message.headers


async def test_a_missing_exchange_raises_and_an_unbound_key_is_dropped_as_before(servers, exchange) -> None:
    name, _ = exchange
    outcomes = OutcomeChannel(servers.amqp_url, name)
    await outcomes.open()
    try:
        # No queue bound: confirmed and dropped by the broker, as before (not an error).
        await outcomes.send("payment.nobody-listens", b"{}", str(uuid.uuid4()))
        missing = OutcomeChannel(servers.amqp_url, f"{name}-missing")
        try:
            with pytest.raises(ChannelNotFoundEntity):
                await missing.send(KEY, b"{}", str(uuid.uuid4()))
        finally:
            await missing.close()
        await outcomes.send(KEY, b"{}", str(uuid.uuid4()))  # the channel is still usable
    finally:
        await outcomes.close()
    with pytest.raises(RuntimeError):
        await outcomes.send(KEY, b"{}", str(uuid.uuid4()))


async def test_a_publish_after_the_connection_was_lost_waits_for_the_reconnect(servers, exchange) -> None:
    name, queue = exchange
    outcomes = OutcomeChannel(servers.amqp_url, name, reconnect_interval_s=0.2)
    await outcomes.open()
    try:
        transport = outcomes._connection.transport  # type: ignore[union-attr]
        await transport.connection.close(ConnectionError("connection lost"))
        await outcomes.send(KEY, b'{"after": "reconnect"}', str(uuid.uuid4()))
    finally:
        await outcomes.close()
    assert (await _one(queue)).body == b'{"after": "reconnect"}'


async def test_a_channel_that_does_not_come_back_fails_the_publish(servers, exchange) -> None:
    name, _ = exchange
    # The next reconnect attempt is 30 s away: the publish gives up after 0.3 s.
    outcomes = OutcomeChannel(servers.amqp_url, name, ready_timeout_s=0.3, reconnect_interval_s=30)
    await outcomes.open()
    try:
        transport = outcomes._connection.transport  # type: ignore[union-attr]
        await transport.connection.close(ConnectionError("connection lost"))
        with pytest.raises(ConnectionError):
            await outcomes.send(KEY, b"{}", str(uuid.uuid4()))
    finally:
        await outcomes.close()
