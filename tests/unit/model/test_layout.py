"""Packing segments into rows for one scoring pass: every segment once, cheaper than padding, right mask."""

from __future__ import annotations

import random

import pytest
import torch

from worker.model.layout import WIDTH_MULTIPLE, build_pass, pack


@pytest.mark.parametrize("seed", range(20))
def test_pack_places_every_segment_once_within_the_width(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(50, 100) for _ in range(rng.choice([1, 2, 7, 64, 256]))]
    packing = pack(sizes)
    placed = sorted(i for row in packing.rows for i in row)
    assert placed == list(range(len(sizes)))
    assert packing.width % WIDTH_MULTIPLE == 0
    assert all(sum(sizes[i] for i in row) <= packing.width for row in packing.rows)
    assert packing.width <= 2 * max(sizes) + WIDTH_MULTIPLE
    assert packing.cost <= len(sizes) * (-(-max(sizes) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def test_pack_shares_rows_when_lengths_differ() -> None:
    # the spread of real notifications (52 to 98 tokens with the answer tree): padding wastes ~30%
    rng = random.Random(1)
    sizes = [rng.randint(52, 98) for _ in range(256)]
    packing = pack(sizes)
    assert len(packing.rows) < 200
    assert packing.cost < 0.85 * 256 * 104
    assert pack([70]).rows == [[0]] and pack([70]).width == 72


def test_build_pass_isolates_segments_and_keeps_their_positions() -> None:
    # branch tokens: 0 -> 1 (a chain), and 2 (a sibling of 0)
    ancestors = torch.tensor([[True, False, False], [True, True, False], [False, False, True]])
    trunks = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35, 36, 37]]
    fed = build_pass(trunks, [90, 91, 92], [0, 1, 0], ancestors, read_slots=[-1, 1],
                     prefix_length=5, pad_id=0)
    rows, width = fed.input_ids.shape
    assert rows < len(trunks) and width % WIDTH_MULTIPLE == 0
    prefix = 5
    for s, trunk in enumerate(trunks):
        r = int(fed.read_rows[2 * s])
        last = int(fed.read_cols[2 * s])  # the trunk's last token
        start = last - len(trunk) + 1
        assert fed.input_ids[r, start:last + 1].tolist() == trunk
        assert fed.input_ids[r, last + 1:last + 4].tolist() == [90, 91, 92]
        n = len(trunk)
        assert fed.position_ids[r, start:last + 4].tolist() == [*range(prefix, prefix + n), prefix + n,
                                                                prefix + n + 1, prefix + n]
        assert int(fed.read_cols[2 * s + 1]) == last + 2  # branch token 1
        mask = fed.mask[r, 0]
        assert mask[start:last + 4, :prefix].all()  # everyone sees the system prefix
        own = set(range(start + prefix, last + 4 + prefix))
        for q in range(start, last + 4):
            seen = {k for k in range(prefix, prefix + width) if mask[q, k]}
            assert seen <= own  # never another segment's tokens, never padding
        trunk_q = last  # the trunk's last token sees its whole trunk, causally
        assert {k - prefix for k in range(prefix, prefix + width) if mask[trunk_q, k]} == set(range(start, last + 1))
        chain = last + 2  # branch token 1 sees the trunk, token 0 and itself, not its cousin 2
        assert {k - prefix for k in range(prefix, prefix + width) if mask[chain, k]} == {
            *range(start, last + 1), last + 1, last + 2}
