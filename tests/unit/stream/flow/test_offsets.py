"""Offset bookkeeping: only the acknowledged contiguous prefix of each partition is ever committable."""

from __future__ import annotations

import pytest

from worker.stream.flow.offsets import OffsetOrderError, OffsetTracker, PartitionOffsets


def test_nothing_consumed_nothing_to_commit() -> None:
    state = PartitionOffsets()
    assert state.position() is None
    assert state.commit_due() is None
    assert state.in_flight == 0


def test_commit_stops_at_the_first_unacknowledged_offset() -> None:
    state = PartitionOffsets()
    for offset in range(5):
        state.track(offset)
    state.ack(1)
    state.ack(2)
    state.ack(4)
    assert state.position() == 0  # offset 0 has no output yet: nothing may be committed
    state.ack(0)
    assert state.position() == 3
    assert state.in_flight == 2  # 3 (unacked) and 4 (acked, behind it)
    assert state.unacked == 1
    state.ack(3)
    assert state.position() == 5
    assert state.in_flight == 0


def test_gaps_between_offsets_do_not_block() -> None:
    state = PartitionOffsets()
    for offset in (10, 13, 20):  # compaction or transaction markers leave holes
        state.track(offset)
    state.ack(10)
    assert state.position() == 13
    state.ack(20)
    state.ack(13)
    assert state.position() == 21


def test_commit_due_only_when_the_position_moved() -> None:
    state = PartitionOffsets()
    state.track(0)
    state.ack(0)
    assert state.commit_due() == 1
    state.mark_committed(1)
    assert state.commit_due() is None
    state.mark_committed(0)  # an older, slower commit answer never moves the mark back
    assert state.committed == 1
    state.track(1)
    assert state.commit_due() is None  # position still 1
    state.ack(1)
    assert state.commit_due() == 2


def test_offsets_must_increase_and_acks_must_be_in_flight() -> None:
    state = PartitionOffsets()
    state.track(5)
    with pytest.raises(OffsetOrderError):
        state.track(5)
    with pytest.raises(OffsetOrderError):
        state.ack(4)
    with pytest.raises(OffsetOrderError):
        state.ack(6)
    state.ack(5)
    with pytest.raises(OffsetOrderError):
        state.ack(5)


def test_tracker_commits_per_partition_and_closes_revoked_ones() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    a, b = tracker.open("a"), tracker.open("b")
    for offset in range(3):
        a.track(offset)
        b.track(offset)
    a.ack(0)
    a.ack(1)
    b.ack(2)
    assert tracker.commits_due() == {"a": 2, "b": 0}
    assert tracker.in_flight == 4
    assert tracker.commits_due(["a", "zzz"]) == {"a": 2}
    closed = tracker.close(["b"])
    assert closed == [b] and b.closed
    assert tracker.partitions() == ["a"]
    assert tracker.get("b") is None
    assert tracker.in_flight == 1


def test_reopening_a_partition_starts_fresh() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    old = tracker.open("a")
    old.track(7)
    new = tracker.open("a")
    assert old.closed and not new.closed
    assert new.position() is None
    old.ack(7)  # a late acknowledgement of the old assignment changes nothing committable
    assert tracker.commits_due() == {}
