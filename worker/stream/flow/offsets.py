"""Per-partition offset bookkeeping (pure): what was consumed, what was acknowledged, what may be committed.

Offsets are consumed in increasing order and acknowledged in any order. The committable position of a
partition is the first consumed offset not yet acknowledged (or one past the last consumed offset
when everything is acknowledged): committing it can never skip a message whose output is missing.
Gaps between offsets (compaction, transaction markers) are fine: only consumed offsets count.

Exceptions:
    OffsetOrderError    an offset tracked out of order, or acknowledged without being tracked
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class OffsetOrderError(ValueError):
    """An internal bookkeeping violation: offsets going backwards, or an ack of an untracked offset."""


class PartitionOffsets:
    """The offsets of one partition during one assignment.

    A new assignment gets a new object; acknowledgements that arrive for an old one change nothing
    that is ever committed again (``closed`` tells the pipeline to drop its leftover work).
    """

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # consumed, in order; acked ones are dropped from the left
        self._acked: set[int] = set()  # acknowledged but not yet at the left edge
        self._next: int | None = None  # one past the last consumed offset
        self._committed: int | None = None  # the last position handed to mark_committed
        # (first offset, time) of each poll's records: one entry per poll, not per record, for the age of
        # the oldest unacknowledged record (dropped lazily once the left edge has moved past them)
        self._consumed_at: deque[tuple[int, float]] = deque()
        self.closed = False

    @property
    def next_offset(self) -> int | None:
        """One past the last consumed offset (None before the first)."""
        return self._next

    @property
    def committed(self) -> int | None:
        return self._committed

    @property
    def in_flight(self) -> int:
        """In flight, the worker's one definition: consumed, and not yet in the acknowledged prefix (its output,
        or an earlier offset's, awaits the broker's acknowledgement). Committing is separate: an offset
        leaves in-flight at its acknowledgement, before the next commit carries it to the broker."""
        return len(self._pending)

    @property
    def unacked(self) -> int:
        return len(self._pending) - len(self._acked)

    def track(self, offset: int, at: float | None = None) -> None:
        """Record a consumed offset (``at``: when, on any monotonic clock); offsets must increase."""
        if self._next is not None and offset < self._next:
            raise OffsetOrderError(f"offset {offset} consumed after {self._next - 1}")
        self._pending.append(offset)
        self._next = offset + 1
        if at is not None and (not self._consumed_at or self._consumed_at[-1][1] != at):
            self._consumed_at.append((offset, at))

    def oldest_unacked_since(self) -> float | None:
        """When the oldest unacknowledged offset was consumed (None when all are acknowledged or untimed)."""
        if not self._pending:
            self._consumed_at.clear()
            return None
        head, times = self._pending[0], self._consumed_at
        while len(times) > 1 and times[1][0] <= head:
            times.popleft()
        return times[0][1] if times and times[0][0] <= head else None

    def ack(self, offset: int) -> None:
        """Record that the output (or dead letter) of a consumed offset is acknowledged."""
        if not self._pending or offset < self._pending[0] or offset >= (self._next or 0):
            raise OffsetOrderError(f"offset {offset} acknowledged but not in flight")
        self._acked.add(offset)
        while self._pending and self._pending[0] in self._acked:
            self._acked.discard(self._pending.popleft())

    def position(self) -> int | None:
        """The committable position: everything before it is acknowledged (None before any consumption)."""
        if self._pending:
            return self._pending[0]
        return self._next

    def commit_due(self) -> int | None:
        """The position to commit now, or None when it is already committed."""
        position = self.position()
        if position is None or position == self._committed:
            return None
        return position

    def mark_committed(self, position: int) -> None:
        """Remember a position the broker accepted."""
        if self._committed is None or position > self._committed:
            self._committed = position


class OffsetTracker(Generic[Key]):
    """PartitionOffsets for every partition this worker owns, keyed by partition."""

    def __init__(self) -> None:
        self._partitions: dict[Key, PartitionOffsets] = {}

    def open(self, key: Key) -> PartitionOffsets:
        """Start a fresh assignment of a partition (the previous one, if any, is closed)."""
        self.close([key])
        state = self._partitions[key] = PartitionOffsets()
        return state

    def get(self, key: Key) -> PartitionOffsets | None:
        return self._partitions.get(key)

    def close(self, keys: Iterable[Key]) -> list[PartitionOffsets]:
        """Forget partitions (revoked or lost); their late acknowledgements go nowhere."""
        closed = []
        for key in keys:
            state = self._partitions.pop(key, None)
            if state is not None:
                state.closed = True
                closed.append(state)
        return closed

    def partitions(self) -> list[Key]:
        return list(self._partitions)

    @property
    def in_flight(self) -> int:
        return sum(state.in_flight for state in self._partitions.values())

    def commits_due(self, keys: Iterable[Key] | None = None) -> dict[Key, int]:
        """Positions to commit now, for the given partitions or all of them."""
        selected = self._partitions if keys is None else {k: self._partitions[k] for k in keys
                                                          if k in self._partitions}
        due = {key: state.commit_due() for key, state in selected.items()}
        return {key: position for key, position in due.items() if position is not None}
