"""Micro-batching of decoded notifications: a batch closes at max size, at the token budget or after max wait.

Max wait applies only to work that arrives at an idle model; what queued while the model was busy goes at once.

Rows of one model call are padded to the longest, so the token budget counts rows x longest row.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from itertools import islice
from typing import Generic, TypeVar

T = TypeVar("T")


def batch_length(tokens: Sequence[int], *, max_size: int, max_tokens: int) -> int:
    """How many items from the front make one batch: at most max_size rows and max_tokens padded tokens.

    The first item always fits, however long, so nothing waits forever.
    """
    longest = 0
    for count, cost in enumerate(tokens[:max_size]):
        longest = max(longest, cost)
        if count > 0 and (count + 1) * longest > max_tokens:
            return count
    return min(len(tokens), max_size)


class BatchQueue(Generic[T]):
    """FIFO of work waiting for the model; ``live(item)`` False drops an item (its partition is gone)."""

    def __init__(self, *, max_size: int, max_tokens: int, max_wait_s: float, tokens: Callable[[T], int],
                 live: Callable[[T], bool]) -> None:
        self.max_size = max_size
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self._tokens = tokens
        self._live = live
        self._items: deque[T] = deque()
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        self._changed.set()

    def close(self) -> int:
        """Stop handing out batches (a waiting next_batch returns []); returns how many items were dropped."""
        self._closed = True
        dropped = len(self._items)
        self._items.clear()
        self._changed.set()
        return dropped

    def prune(self) -> int:
        """Drop items that are no longer live; returns how many."""
        before = len(self._items)
        self._items = deque(item for item in self._items if self._live(item))
        return before - len(self._items)

    def _full(self) -> bool:
        head = [self._tokens(item) for item in islice(self._items, self.max_size + 1)]
        return batch_length(head, max_size=self.max_size, max_tokens=self.max_tokens) < len(head) or (
            len(head) >= self.max_size)

    async def _wait_change(self, timeout_s: float | None) -> None:
        self._changed.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def next_batch(self, *, full: bool = False) -> list[T]:
        """The next batch, called when the model is free; [] once the queue is closed.

        Work that queued up while the model was busy goes at once (as much as one batch holds): the batch
        grows with the load by itself, and a free model never idles for max_wait_s beside waiting work. Only
        when the queue was empty does the first arrival wait up to max_wait_s for company.

        ``full``: the model is still busy with a launched batch; only a full batch is worth launching behind
        it, so this waits (however long) until one has queued. Cancelling the wait takes nothing.
        """
        if full:
            while not self._closed and not (self.prune_head() and self._full()):
                await self._wait_change(None)
        waited = False
        while not self._closed and not self.prune_head():
            waited = True
            await self._wait_change(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.max_wait_s if waited else 0.0)
        while not self._closed and not self._full() and (remaining := deadline - loop.time()) > 0:
            await self._wait_change(remaining)
        if self._closed:
            return []
        self.prune()
        count = batch_length([self._tokens(item) for item in islice(self._items, self.max_size)],
                             max_size=self.max_size, max_tokens=self.max_tokens)
        return [self._items.popleft() for _ in range(count)]

    def prune_head(self) -> bool:
        """Drop dead items at the front; whether a live one is left there."""
        while self._items and not self._live(self._items[0]):
            self._items.popleft()
        return bool(self._items)
