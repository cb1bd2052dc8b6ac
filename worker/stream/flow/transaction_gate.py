"""Exactly-once, per input partition (pure): which deliveries the open transaction may take, and where it ends.

A transaction may commit only an input position that covers everything in it: if a dead letter for
offset 12 were in the transaction while offset 10 is still in the model, committing position 10 would make
12's dead letter visible while 12 itself is read again after a crash (twice in the output). So at a
commit the gate closes at the highest offset handed over so far (``close``): deliveries for offsets up to
it still go in (they fill the gaps), later ones wait; once every offset up to it is acknowledged, the
position after it is committed with the transaction, and ``reopen`` releases what waited into the next one.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class TransactionGate(Generic[T]):
    """One input partition's gate; ``T`` is whatever carries a delivery (the outbox's Delivery)."""

    def __init__(self) -> None:
        self.highest: int | None = None  # the highest input offset admitted into the open transaction
        self.limit: int | None = None  # closed at this offset: later ones wait (None: open)
        self.waiting: list[T] = []

    def admit(self, offset: int, item: T) -> bool:
        """Whether ``item`` (for input ``offset``) goes into the open transaction now; otherwise it waits."""
        if self.limit is not None and offset > self.limit:
            self.waiting.append(item)
            return False
        if self.highest is None or offset > self.highest:
            self.highest = offset
        return True

    def close(self) -> int | None:
        """Close at the highest offset admitted; None when the transaction holds nothing (nothing to commit)."""
        self.limit = self.highest
        return self.limit

    def reopen(self, committed: bool) -> list[T]:
        """Open again (a new transaction when ``committed``); returns the items that waited, in order."""
        if committed:
            self.highest = None
        self.limit = None
        waiting, self.waiting = self.waiting, []
        return waiting


class TransactionGates(Generic[T]):
    """The gate of every input partition, keyed by its offset bookkeeping (a new assignment, a new gate)."""

    def __init__(self) -> None:
        self._gates: dict[object, TransactionGate[T]] = {}

    def gate(self, partition: object) -> TransactionGate[T]:
        found = self._gates.get(partition)
        if found is None:
            found = self._gates[partition] = TransactionGate()
        return found

    def reopen(self, partition: object, *, committed: bool, closed: bool) -> list[T]:
        """Reopen the partition's gate; a partition given up (``closed``) forgets it. Returns what waited."""
        waiting = self.gate(partition).reopen(committed)
        if closed:
            del self._gates[partition]
        return waiting
