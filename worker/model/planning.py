"""Batch planning (pure): which notifications share one model call.

Rows of one model call are padded to the longest, so the plan sorts by length and cuts a batch when
either the row count or the padded token count (rows x longest) would pass its budget.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], *, max_size: int, max_tokens: int) -> list[list[int]]:
    """Group indices into batches: sorted by length, each within max_size rows and max_tokens padded tokens.

    A single row longer than max_tokens still gets a batch of its own (it is never dropped).
    """
    if max_size < 1 or max_tokens < 1:
        raise ValueError("max_size and max_tokens must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[index]  # sorted ascending: the newcomer is the longest
        if current and (len(current) + 1 > max_size or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of computed tokens that are padding under a plan (0 = none)."""
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    real = sum(lengths)
    return 0.0 if padded == 0 else 1.0 - real / padded
