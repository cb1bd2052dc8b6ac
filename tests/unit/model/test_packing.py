"""The fast engine's one-row layout: buckets, windows, ids placed on the device, the two mask forms agree."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from worker.model.layout import build_pass
from worker.model.packing import (
    BUCKET_STEPS,
    SMALLEST_BUCKET,
    Tree,
    bucket,
    local_mask,
    mask_mod_for,
    pack_ids,
    place,
    window_limit,
    window_spans,
)

# A small answer tree: two branches under the trunk's end, one of them with a child.
TREE = Tree(tokens=torch.tensor([70, 71, 72]), depths=torch.tensor([0, 0, 1]),
            ancestors=torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool),
            read_slots=torch.tensor([-1, 1, 2]))
PREFIX = 5
TRUNKS = [[11, 12, 13], [21, 22], [31, 32, 33, 34]]


def test_bucket_is_the_smallest_ladder_size_that_fits() -> None:
    assert bucket(1) == SMALLEST_BUCKET
    sizes = sorted({bucket(n) for n in range(1, 5000)})
    for n in range(1, 5000):
        size = bucket(n)
        assert size >= n
        assert all(s < n for s in sizes if s < size)  # no smaller bucket holds n
        assert size <= max(SMALLEST_BUCKET, n * BUCKET_STEPS[1])  # padding at most 25%
    assert len(sizes) <= 4 * 7  # few shapes to compile for up to 5000 tokens
    with pytest.raises(ValueError):
        bucket(0)


def test_windows_hold_whole_segments_within_the_limit() -> None:
    sizes = [300, 200, 100, 700, 50, 50]
    spans = window_spans(sizes, 512)
    assert spans == ((0, 500), (500, 600), (600, 1300), (1300, 1400))  # 700 alone: it is longer than the limit
    assert window_limit([100, 200]) == 512 and window_limit([600]) == 1200 and window_limit([5000]) == 2048


def test_place_lays_out_ids_positions_segments_and_reads() -> None:
    ids, lengths = pack_ids(TRUNKS, 3, pad_id=0, padded_length=32)
    packed = place(ids, lengths, TREE, PREFIX, window_spans([6, 5, 7], 512))
    assert packed.length == 18 and packed.count == 3 and packed.input_ids.shape[0] == 32
    assert packed.input_ids[:6].tolist() == [11, 12, 13, 70, 71, 72]
    assert packed.positions[:6].tolist() == [5, 6, 7, 8, 8, 9]  # branches side by side, depth below the trunk
    assert packed.positions[6:11].tolist() == [5, 6, 7, 7, 8]
    assert packed.segment[:18].tolist() == [0] * 6 + [1] * 5 + [2] * 7 and set(packed.segment[18:].tolist()) == {-1}
    assert packed.branch[:6].tolist() == [-1, -1, -1, 0, 1, 2]
    assert packed.read_index.tolist() == [2, 4, 5, 7, 9, 10, 14, 16, 17]  # trunk end, then slots 1 and 2


def test_layout_matches_the_reference_rows() -> None:
    """Every read of the one-row layout sees the same tokens at the same positions as the reference's rows."""
    ids, lengths = pack_ids(TRUNKS, 3, pad_id=0)
    packed = place(ids, lengths, TREE, PREFIX, window_spans([6, 5, 7], 512))
    mask = local_mask(packed.segment, packed.branch, TREE.ancestors, slice(0, 18), slice(0, 18))
    reference = build_pass(TRUNKS, TREE.tokens.tolist(), TREE.depths.tolist(), TREE.ancestors,
                           TREE.read_slots.tolist(), PREFIX, pad_id=0)
    for read, (row, col) in enumerate(zip(reference.read_rows.tolist(), reference.read_cols.tolist(), strict=True)):
        mine = packed.read_index[read]
        seen_mine = [(packed.input_ids[k].item(), packed.positions[k].item()) for k in range(18) if mask[mine, k]]
        visible = reference.mask[row, 0, col, PREFIX:]
        seen_ref = [(reference.input_ids[row, k].item(), reference.position_ids[row, k].item())
                    for k in range(visible.shape[0]) if visible[k]]
        assert seen_mine == seen_ref
        assert packed.positions[mine] == reference.position_ids[row, col]


def test_flex_mask_mod_equals_the_dense_windowed_mask() -> None:
    ids, lengths = pack_ids(TRUNKS, 3, pad_id=0, padded_length=24)
    packed = place(ids, lengths, TREE, PREFIX, window_spans([6, 5, 7], 512))
    mask_mod: Any = mask_mod_for(packed.segment, packed.branch, TREE.ancestors, PREFIX)
    queries = torch.arange(24)[:, None]
    keys = torch.arange(PREFIX + 24)[None, :]
    dense = mask_mod(torch.tensor(0), torch.tensor(0), queries, keys)
    assert dense[:, :PREFIX].all()  # everyone, padding too, sees the prefix (no empty softmax row)
    local = local_mask(packed.segment, packed.branch, TREE.ancestors, slice(0, 24), slice(0, 24))
    assert torch.equal(dense[:, PREFIX:], local)
    assert not local[18:].any() and not local[:, 18:].any()  # padding sees and is seen by no segment token


def test_pack_ids_refuses_a_padded_length_that_is_too_short() -> None:
    with pytest.raises(ValueError, match="padded length"):
        pack_ids(TRUNKS, 3, pad_id=0, padded_length=10)
