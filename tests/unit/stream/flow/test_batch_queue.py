"""Micro-batching: size, padded-token budget, max wait, dropped work."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from worker.stream.flow.batch_queue import BatchQueue, batch_length


def test_batch_length_respects_size_and_padded_tokens() -> None:
    assert batch_length([], max_size=4, max_tokens=100) == 0
    assert batch_length([10] * 10, max_size=4, max_tokens=1000) == 4
    assert batch_length([10, 10, 40], max_size=8, max_tokens=100) == 2  # 3 rows x 40 > 100
    assert batch_length([500, 1], max_size=8, max_tokens=100) == 1  # an oversized first row still goes


@dataclass
class Item:
    tokens: int
    alive: bool = True


def make_queue(max_size: int = 4, max_tokens: int = 1000, max_wait_s: float = 0.05) -> BatchQueue[Item]:
    return BatchQueue(max_size=max_size, max_tokens=max_tokens, max_wait_s=max_wait_s,
                      tokens=lambda item: item.tokens, live=lambda item: item.alive)


HOUR = 3600.0  # a max wait no test ever reaches: a batch that comes back went without waiting for it


async def test_full_batch_goes_without_waiting() -> None:
    queue = make_queue(max_wait_s=HOUR)
    for _ in range(6):
        queue.put(Item(10))
    batch = await asyncio.wait_for(queue.next_batch(), 60)  # waiting for max_wait would take an hour
    assert len(batch) == 4 and len(queue) == 2


async def test_work_queued_while_the_model_was_busy_goes_at_once() -> None:
    # next_batch is called when the model frees up: what accumulated meanwhile goes now, not after max wait
    queue = make_queue(max_wait_s=30.0)
    for _ in range(3):
        queue.put(Item(10))
    batch = await asyncio.wait_for(queue.next_batch(), 5.0)
    assert len(batch) == 3 and len(queue) == 0


async def test_while_the_model_is_busy_only_a_full_batch_goes_and_cancelling_takes_nothing() -> None:
    queue = make_queue(max_size=4, max_tokens=1000, max_wait_s=0.0)
    for _ in range(3):
        queue.put(Item(10))
    waiting = asyncio.create_task(queue.next_batch(full=True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # 3 of 4: not worth launching behind the busy model
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert len(queue) == 3  # the cancelled wait took nothing
    waiting = asyncio.create_task(queue.next_batch(full=True))
    queue.put(Item(10))
    assert len(await asyncio.wait_for(waiting, 5.0)) == 4
    queue.put(Item(10))
    queue.put(Item(600))  # two rows padded to 600 pass the token budget: full at one row
    assert len(await asyncio.wait_for(queue.next_batch(full=True), 5.0)) == 1
    closed = asyncio.create_task(queue.next_batch(full=True))
    queue.close()
    assert await asyncio.wait_for(closed, 5.0) == []


async def test_work_arriving_at_an_idle_model_waits_max_wait_then_goes() -> None:
    queue = make_queue(max_wait_s=0.2)
    waiter = asyncio.create_task(queue.next_batch())
    await asyncio.sleep(0)
    started = time.monotonic()
    queue.put(Item(10))
    batch = await asyncio.wait_for(waiter, 5.0)
    assert len(batch) == 1
    assert time.monotonic() - started >= 0.15


async def test_late_arrivals_join_the_waiting_batch() -> None:
    queue = make_queue(max_wait_s=HOUR)
    waiter = asyncio.create_task(queue.next_batch())
    await asyncio.sleep(0)
    queue.put(Item(10))
    await asyncio.sleep(0)
    for _ in range(3):
        queue.put(Item(10))
    batch = await asyncio.wait_for(waiter, 60)  # the fourth arrival fills the batch: no max wait involved
    assert len(batch) == 4


async def test_dead_items_are_dropped() -> None:
    queue = make_queue(max_wait_s=0.0)
    queue.put(Item(10, alive=False))
    queue.put(Item(20))
    queue.put(Item(30, alive=False))
    assert [item.tokens for item in await queue.next_batch()] == [20]
    assert len(queue) == 0
    queue.put(Item(40, alive=False))
    assert queue.prune() == 1 and len(queue) == 0


async def test_close_wakes_the_waiter_and_drops_the_rest() -> None:
    queue = make_queue(max_wait_s=HOUR)
    waiter = asyncio.create_task(queue.next_batch())
    for _ in range(5):  # let the waiter run up to its wait (event-driven: no sleep raced against max wait)
        await asyncio.sleep(0)
    assert not waiter.done()
    assert queue.close() == 0
    assert await asyncio.wait_for(waiter, 60) == []
    queue.put(Item(5))
    queue.put(Item(5))
    assert queue.close() == 2
    assert await queue.next_batch() == []
