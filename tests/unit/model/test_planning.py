"""Batch planning: length-sorted, within row and token budgets, nothing dropped."""

from __future__ import annotations

import random

import pytest

from worker.model.planning import padding_waste, plan_batches


def test_every_index_once_and_budgets_hold() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(5, 300) for _ in range(500)]
    batches = plan_batches(lengths, max_size=32, max_tokens=4096)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(500))
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) * max(lengths[i] for i in batch) <= 4096


def test_sorting_reduces_padding() -> None:
    rng = random.Random(2)
    lengths = [rng.randint(5, 300) for _ in range(256)]
    sorted_plan = plan_batches(lengths, max_size=32, max_tokens=10**9)
    naive = [list(range(i, i + 32)) for i in range(0, 256, 32)]
    assert padding_waste(lengths, sorted_plan) < padding_waste(lengths, naive) / 3


def test_an_overlong_row_gets_its_own_batch() -> None:
    assert plan_batches([10, 5000, 20], max_size=8, max_tokens=100) == [[0, 2], [1]]


def test_empty_and_invalid() -> None:
    assert plan_batches([], max_size=4, max_tokens=10) == []
    with pytest.raises(ValueError):
        plan_batches([1], max_size=0, max_tokens=10)
