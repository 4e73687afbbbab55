"""Parking-lot actions against the real RabbitMQ: both lots, replays only through the exchange,
listings that keep no more than a preview in memory, and one action at a time per lot (in one
process and across two) so that `count` and what a listing shows agree."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

from app.messaging.dlq import DlqBusy, DlqError, DlqOperations, UnknownLot
from tests.conftest import bus_for
from tests.integration.test_dlq import declare, drain, put, wait_depth


@pytest.fixture
async def lots(settings_factory: Any) -> Any:
    """Both consumed queues and their lots, declared and bound as the service does; deleted afterwards."""
    settings = settings_factory(rabbitmq_cancel_queue=f"{settings_factory().rabbitmq_consume_queue}-cancelled")
    queues = (settings.rabbitmq_consume_queue, settings.rabbitmq_cancel_queue)
    async with bus_for(settings) as bus:
        names = [name for queue in queues for name in (queue, f"{queue}.dlq")]
        await declare(bus, *names)
        try:
            yield settings, bus, queues
        finally:
            await bus.delete(*names, exchange=True)


async def test_both_lots_by_role_or_name(lots: Any) -> None:
    settings, bus, (stock, cancel) = lots
    operations = DlqOperations.from_settings(settings)
    await put(bus, f"{stock}.dlq", b"stock-1", headers={"x-rejection-reason": "bad stock"})
    await put(bus, f"{cancel}.dlq", b"cancel-1", headers={"x-rejection-reason": "bad cancel"})
    await put(bus, f"{cancel}.dlq", b"cancel-2", headers={"x-rejection-reason": "bad cancel"})

    assert [m.body_preview for m in (await operations.list()).messages] == ["stock-1"]
    for name in ("order-cancelled", cancel, f"{cancel}.dlq"):
        listing = await operations.list(queue=name)
        assert listing.queue == f"{cancel}.dlq"
        assert listing.count == 2
        assert [m.body_preview for m in listing.messages] == ["cancel-1", "cancel-2"]
    with pytest.raises(UnknownLot):
        await operations.list(queue="payment.something-else")

    result = await operations.replay(queue="order-cancelled")
    assert (result.queue, result.target, result.replayed, result.remaining) == (f"{cancel}.dlq", cancel, 2, 0)
    assert [m.body for m in await drain(bus, cancel)] == [b"cancel-1", b"cancel-2"]
    assert await bus.queue_depth(f"{stock}.dlq") == 1  # the other lot untouched
    assert await bus.queue_depth(stock) == 0


async def test_replay_goes_through_the_exchange_only(lots: Any) -> None:
    settings, bus, (stock, _) = lots
    operations = DlqOperations.from_settings(settings)
    channel = await bus.connection.channel()
    target = await channel.declare_queue(stock, passive=True)
    await target.unbind(bus.exchange_name, routing_key=f"replay.{stock}")
    await put(bus, f"{stock}.dlq", b"parked")
    # Without the replay binding nothing arrives (the default exchange is never used) and the
    # original stays parked.
    with pytest.raises(DlqError, match=f"replay.{stock}"):
        await operations.replay()
    await wait_depth(bus, f"{stock}.dlq", 1)
    assert await bus.queue_depth(stock) == 0

    # A queue bound to `payment.#` (an outcome listener) never sees a replay.
    listener = await channel.declare_queue(f"{stock}.listener", auto_delete=True)
    await listener.bind(bus.exchange_name, routing_key="payment.#")
    await target.bind(bus.exchange_name, routing_key=f"replay.{stock}")
    assert (await operations.replay()).replayed == 1
    assert [m.body for m in await drain(bus, stock)] == [b"parked"]
    assert await bus.queue_depth(listener.name) == 0
    await channel.close()


async def test_a_listing_keeps_only_previews_in_memory(lots: Any) -> None:
    settings, bus, (stock, _) = lots
    size, count = 2 * 1024 * 1024, 12
    for i in range(count):
        await put(bus, f"{stock}.dlq", bytes([65 + i]) * size)
    operations = DlqOperations.from_settings(settings)
    await operations.list(limit=1)  # connection set-up costs out of the measurement
    tracemalloc.start()
    try:
        listing = await operations.list(limit=count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert listing.count == count
    assert [m.body_size for m in listing.messages] == [size] * count
    assert all(len(m.body_preview) == 256 for m in listing.messages)
    # Holding every body would need 24 MiB; one body in flight plus frame buffers is the bound.
    assert peak < 4 * size, f"peak {peak / 2**20:.1f} MiB"


async def test_concurrent_listings_and_replays_see_the_whole_lot(lots: Any) -> None:
    settings, bus, (stock, _) = lots
    for i in range(40):
        await put(bus, f"{stock}.dlq", f"parked-{i:02}".encode())
    here = DlqOperations.from_settings(settings)
    elsewhere = DlqOperations.from_settings(settings)  # another process: its own locks and connection
    listings = await asyncio.gather(*(ops.list(limit=100) for ops in (here, elsewhere) * 4))
    for listing in listings:
        assert listing.count == 40
        assert [m.body_preview for m in listing.messages] == [f"parked-{i:02}" for i in range(40)]

    # A replay racing listings: each listing shows the lot before or after it, never part of it.
    results = await asyncio.gather(
        here.list(limit=100), elsewhere.replay(limit=15), here.list(limit=100), elsewhere.list(limit=100)
    )
    for listing in (results[0], results[2], results[3]):
        assert listing.count == len(listing.messages)
        assert listing.count in (40, 25)
    assert results[1].replayed == 15
    assert results[1].remaining == 25
    assert len(await drain(bus, stock)) == 15


async def test_a_busy_lot_answers_busy_instead_of_waiting_forever(lots: Any) -> None:
    settings, _, (stock, _) = lots
    holder = DlqOperations.from_settings(settings)
    impatient = DlqOperations(
        settings.amqp_url,
        settings.rabbitmq_publish_exchange,
        (stock, settings.rabbitmq_cancel_queue),
        lock_wait_s=0.3,
    )
    async with holder._session(stock):  # another process is in the middle of an action
        with pytest.raises(DlqBusy):
            await impatient.list()
        assert (await impatient.list(queue="order-cancelled")).count == 0  # the other lot is free
    assert (await impatient.list()).count == 0  # released with the holder's connection
