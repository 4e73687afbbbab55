"""Group commit: the payments in flight together share one statement.

`submit(item)` queues an item and returns its result. A writer runs a batch as soon as it is
free; items that arrive while a statement runs wait for the next one and go together. At
low load a lone item runs at once (no added latency); under load one round trip and one
transaction serve many payments.

Two choices make the batches large enough to matter (measured with the flood benchmark,
which counted about two items per statement before them): the first item's writer yields
to the event loop once before it takes a batch, so that the deliveries that arrived in the
same frames (RabbitMQ hands several to one read) join it; and one writer per statement kind
by default, so that what arrives during a statement waits for the next one instead of
starting a second, smaller statement on another connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item type, named like O (output)
O = TypeVar("O")  # noqa: E741 - the output type


class GroupCommitter(Generic[I, O]):
    def __init__(
        self,
        run_batch: Callable[[list[I]], Awaitable[list[O]]],
        run_one: Callable[[I], Awaitable[O]],
        *,
        max_batch: int = 256,
        writers: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._run_one = run_one
        self._max_batch = max_batch
        self._writers = writers
        self._active = 0
        self._queue: list[tuple[I, asyncio.Future[O]]] = []

    async def submit(self, item: I) -> O:
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._active < self._writers:
            # Become a writer in this task (no task to spawn at low load) until our own item
            # is settled; whatever is still queued then gets a writer of its own.
            self._active += 1
            try:
                await asyncio.sleep(0)  # one loop iteration: the deliveries of the same read join
                while not future.done() and self._queue:
                    await self._settle(self._take())
            finally:
                self._active -= 1
                if self._queue and self._active < self._writers:
                    self._active += 1
                    asyncio.create_task(self._drain())  # noqa: RUF006 - ends when the queue is empty
        return await future

    def _take(self) -> list[tuple[I, asyncio.Future[O]]]:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        return [(item, future) for item, future in batch if not future.cancelled()]

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._settle(self._take())
        finally:
            self._active -= 1

    async def _settle(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        if not batch:
            return
        try:
            results = await self._run_batch([item for item, _ in batch])
        except asyncio.CancelledError:
            # The writer's task was cancelled (shutdown): its neighbours must not wait forever.
            for _, future in batch:
                _fail(future, RuntimeError("the statement was cancelled"))
            raise
        except Exception as batch_error:  # noqa: BLE001 - one bad item: retry the batch item by item
            if len(batch) == 1:
                _fail(batch[0][1], batch_error)
                return
            # One bad item must not fail its neighbours: settle them one by one.
            for item, future in batch:
                try:
                    result = await self._run_one(item)
                except Exception as error:  # noqa: BLE001 - handed to that item's caller
                    _fail(future, error)
                else:
                    if not future.done():
                        future.set_result(result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
