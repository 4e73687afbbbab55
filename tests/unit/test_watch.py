"""The consumer watch: readiness sees a closed consumers' channel at once, and a channel that
stays closed past the grace period makes the broker reconnect (and consume again)."""

from __future__ import annotations

from typing import Any

from app.messaging.watch import ConsumerWatch


class FakeChannel:
    def __init__(self) -> None:
        self.is_closed = False


class FakeBroker:
    def __init__(self) -> None:
        self.channel = FakeChannel()
        self.restarts: list[str] = []
        self.answers = True

    async def ping(self, timeout: float) -> bool:
        return self.answers

    async def declare_queue(self, queue: Any) -> Any:
        return type("Declared", (), {"channel": self.channel})()

    async def stop(self) -> None:
        self.restarts.append("stop")

    async def start(self) -> None:
        self.restarts.append("start")
        self.channel = FakeChannel()  # a new connection, a new channel


async def test_closed_channel_is_unhealthy_at_once_and_restarted_after_the_grace() -> None:
    broker = FakeBroker()
    watch = ConsumerWatch(broker, queues=[object()], grace_s=0.0)  # type: ignore[arg-type]  # fakes
    await watch._attach()
    await watch.check()
    assert watch.healthy and broker.restarts == []
    broker.channel.is_closed = True
    assert not watch.healthy
    await watch.check()  # first sight: give aio-pika its chance to reopen
    assert broker.restarts == []
    await watch.check()  # still closed after the grace period: reconnect
    assert broker.restarts == ["stop", "start"] and watch.restarts == 1
    assert watch.healthy


async def test_a_channel_that_reopens_by_itself_is_left_alone() -> None:
    broker = FakeBroker()
    watch = ConsumerWatch(broker, queues=[object()], grace_s=60.0)  # type: ignore[arg-type]  # fakes
    await watch._attach()
    broker.channel.is_closed = True
    await watch.check()
    broker.channel.is_closed = False
    await watch.check()
    await watch.check()
    assert broker.restarts == [] and watch.healthy


async def test_a_lost_connection_is_left_to_the_client_s_reconnection() -> None:
    broker = FakeBroker()
    watch = ConsumerWatch(broker, queues=[object()], grace_s=0.0)  # type: ignore[arg-type]  # fakes
    await watch._attach()
    broker.channel.is_closed, broker.answers = True, False
    for _ in range(3):
        await watch.check()
    assert broker.restarts == [] and not watch.healthy
