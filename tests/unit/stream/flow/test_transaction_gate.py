"""The exactly-once gate: a transaction commits only a position that covers everything in it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.stream.flow.transaction_gate import TransactionGate


def test_an_empty_transaction_has_nothing_to_commit() -> None:
    gate: TransactionGate[str] = TransactionGate()
    assert gate.close() is None
    assert gate.reopen(committed=False) == []


def test_a_dead_letter_ahead_of_the_model_closes_the_transaction_at_its_offset() -> None:
    gate: TransactionGate[str] = TransactionGate()
    assert gate.admit(12, "dead letter of 12")  # intake rejected 12 while 10 and 11 are in the model
    assert gate.close() == 12  # so the commit must wait for 10 and 11, and then covers 12
    assert gate.admit(10, "result of 10") and gate.admit(11, "result of 11")  # they fill the gap
    assert not gate.admit(13, "result of 13")  # past the limit: the next transaction takes it
    assert gate.reopen(committed=True) == ["result of 13"]
    assert gate.close() is None  # the released item is handed over again through admit()
    assert gate.admit(13, "result of 13") and gate.close() == 13


def test_a_transaction_that_did_not_commit_keeps_its_highest_offset() -> None:
    gate: TransactionGate[str] = TransactionGate()
    gate.admit(5, "a")
    gate.close()
    assert not gate.admit(6, "b")
    assert gate.reopen(committed=False) == ["b"]
    assert gate.close() == 5  # still open with 5 in it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["hand over", "close", "commit"])), max_size=60))
def test_nothing_past_the_limit_goes_in_and_nothing_waits_forever(steps: list[tuple[int, str]]) -> None:
    """Random hand-overs, closes and commits: an admitted offset never exceeds a closed limit, the limit is the
    highest offset in the transaction, and everything that waited comes out at the next commit."""
    gate: TransactionGate[int] = TransactionGate()
    in_transaction: list[int] = []
    for offset, action in steps:
        if action == "hand over" and gate.admit(offset, offset):
            assert gate.limit is None or offset <= gate.limit
            in_transaction.append(offset)
        elif action == "close" and gate.limit is None:
            assert gate.close() == (max(in_transaction) if in_transaction else None)
        elif action == "commit":
            gate.close()
            in_transaction = []
            for item in gate.reopen(committed=True):
                assert gate.admit(item, item)
                in_transaction.append(item)
    gate.close()
    gate.reopen(committed=True)
    assert gate.waiting == []
