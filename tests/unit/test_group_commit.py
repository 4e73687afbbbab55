"""Group commit: concurrent submissions share batches; one bad item fails alone."""

from __future__ import annotations

import asyncio

import pytest

from app.persistence.group_commit import GroupCommitter


async def test_lone_item_runs_at_once_and_concurrent_items_share_batches() -> None:
    batches: list[list[int]] = []

    async def run_batch(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    committer = GroupCommitter(run_batch, lambda i: run_batch([i]), writers=1)
    assert await committer.submit(1) == 10
    assert batches == [[1]]
    results = await asyncio.gather(*(committer.submit(i) for i in range(2, 52)))
    assert results == [i * 10 for i in range(2, 52)]
    assert len(batches) < 1 + 10, f"{len(batches)} statements for 50 items"
    assert sorted(i for batch in batches for i in batch) == list(range(1, 52))


async def test_items_submitted_in_one_loop_iteration_share_the_first_statement() -> None:
    batches: list[list[int]] = []

    async def run_batch(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return items

    committer = GroupCommitter(run_batch, lambda i: run_batch([i]))
    assert await asyncio.gather(*(committer.submit(i) for i in range(10))) == list(range(10))
    assert batches == [list(range(10))]


async def test_a_failing_item_fails_alone() -> None:
    async def run_batch(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("bad item 13")
        return items

    async def run_one(item: int) -> int:
        return (await run_batch([item]))[0]

    committer = GroupCommitter(run_batch, run_one, writers=1)
    results = await asyncio.gather(*(committer.submit(i) for i in range(20)), return_exceptions=True)
    assert next(r for r in results if isinstance(r, Exception)).args == ("bad item 13",)
    assert [r for r in results if not isinstance(r, Exception)] == [i for i in range(20) if i != 13]


async def test_batches_are_capped() -> None:
    sizes: list[int] = []

    async def run_batch(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.005)
        return items

    committer = GroupCommitter(run_batch, lambda i: run_batch([i]), max_batch=8, writers=1)
    await asyncio.gather(*(committer.submit(i) for i in range(40)))
    assert max(sizes) <= 8 and sum(sizes) == 40


@pytest.mark.parametrize("writers", [1, 2])
async def test_cancelled_waiter_does_not_break_others(writers: int) -> None:
    async def run_batch(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        return items

    committer = GroupCommitter(run_batch, lambda i: run_batch([i]), writers=writers)
    doomed = asyncio.create_task(committer.submit(0))
    others = [asyncio.create_task(committer.submit(i)) for i in range(1, 5)]
    await asyncio.sleep(0)
    doomed.cancel()
    assert await asyncio.gather(*others) == [1, 2, 3, 4]
