"""A watch on the consumers' channel: no channel-level error may silently stop consumption.

aio-pika reopens a channel the broker closed, but a repeated channel error can leave it
closed for good — with no consumer on the queue while every probe looked healthy. This
watch looks at the channel every second; readiness reports DOWN while it is closed, and
if it stays closed past a short grace period while the broker answers, the broker
connection is restarted, which declares and consumes again. (A lost connection is left to
aio-pika's own reconnection.)
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitQueue
from loguru import logger


class ConsumerWatch:
    def __init__(
        self, broker: RabbitBroker, queues: list[RabbitQueue], *, interval_s: float = 1.0, grace_s: float = 3.0
    ) -> None:
        self.broker = broker
        self.queues = queues
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._channels: list[Any] = []
        self._closed_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def healthy(self) -> bool:
        return bool(self._channels) and not any(channel.is_closed for channel in self._channels)

    async def start(self) -> None:
        await self._attach()
        self._task = asyncio.create_task(self._loop(), name="consumer-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _attach(self) -> None:
        # A declared queue object carries the channel its subscriber consumes on.
        self._channels = [(await self.broker.declare_queue(queue)).channel for queue in self.queues]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - try again next second
                logger.warning("consumer watch: {error}", error=repr(error))

    async def check(self) -> None:
        if self.healthy:
            self._closed_since = None
            return
        if not await self.broker.ping(timeout=1.0):
            # The connection itself is down: aio-pika reconnects and reopens the channels.
            self._closed_since = None
            return
        now = time.monotonic()
        if self._closed_since is None:
            self._closed_since = now
            logger.warning("the consumers' channel is closed; waiting for it to reopen")
            return
        if now - self._closed_since < self.grace_s:
            return
        logger.error("the consumers' channel stayed closed: reconnecting to RabbitMQ to consume again")
        self.restarts += 1
        await self.broker.stop()
        await self.broker.start()
        await self._attach()
        self._closed_since = None
        logger.info("consuming again after a channel failure")
