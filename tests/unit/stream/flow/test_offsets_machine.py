"""The offset tracker as a hypothesis state machine: only the acknowledged prefix is committable, commits never go back.

A model (a plain dict of consumed offsets to acknowledged-or-not) runs beside the real PartitionOffsets;
rules consume offsets (with gaps, as compaction leaves), acknowledge any in-flight one in any order, and
commit whatever is due, as the committer does.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worker.stream.flow.offsets import PartitionOffsets


class OffsetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = PartitionOffsets()
        self.consumed: dict[int, bool] = {}  # offset -> acknowledged
        self.next = 0
        self.clock = 0.0
        self.consumed_at: dict[int, float] = {}
        self.commits: list[int] = []

    @rule(gap=st.integers(min_value=0, max_value=3), count=st.integers(min_value=1, max_value=5))
    def consume(self, gap: int, count: int) -> None:
        self.clock += 1.0
        for _ in range(count):
            offset = self.next + gap
            self.state.track(offset, self.clock)
            self.consumed[offset], self.consumed_at[offset] = False, self.clock
            self.next, gap = offset + 1, 0

    @precondition(lambda self: any(not acked for acked in self.consumed.values()))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from(sorted(o for o, acked in self.consumed.items() if not acked)))
        self.state.ack(offset)
        self.consumed[offset] = True

    @rule()
    def commit(self) -> None:
        position = self.state.commit_due()
        if position is not None:
            self.state.mark_committed(position)
            self.commits.append(position)

    @invariant()
    def only_the_acknowledged_prefix_is_committable(self) -> None:
        position = self.state.position()
        if not self.consumed:
            assert position is None
            return
        unacked = [offset for offset, acked in self.consumed.items() if not acked]
        assert position == (min(unacked) if unacked else self.next)
        assert all(self.consumed[offset] for offset in self.consumed if offset < position)

    @invariant()
    def commits_never_go_back(self) -> None:
        assert self.commits == sorted(set(self.commits))  # strictly increasing
        if self.commits:
            assert self.state.committed == self.commits[-1]

    @invariant()
    def the_oldest_unacknowledged_is_the_earliest_consumed_still_open(self) -> None:
        unacked = [offset for offset, acked in self.consumed.items() if not acked]
        expected = self.consumed_at[min(unacked)] if unacked else None
        assert self.state.oldest_unacked_since() == expected
        assert self.state.unacked == len(unacked)


OffsetMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_offset_tracker_state_machine = OffsetMachine.TestCase
