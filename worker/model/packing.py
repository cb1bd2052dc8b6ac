"""One packed row per scoring pass: every segment end to end after ONE system prefix, masks from segment ids.

The fast engine's layout (the reference's is layout.py, rows of a padded batch). A segment is one
notification's prompt tokens after the prefix, the answer plan's trunk, then the plan's branch tokens
(answer_trie.FeedPlan). The CPU only concatenates token ids; segment ids, position ids, branch indices and
the read indices are derived on the device from the segment lengths, and the attention mask is a function
of those ids (FlexAttention's mask_mod, or dense per window for SDPA), never a Python-built tensor.
Lengths are padded up to a few bucketed sizes so that compiled kernels and CUDA graphs see few shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

BUCKET_STEPS = (1.0, 1.25, 1.5, 1.75)  # buckets: 64 x 2^k x step, so padding wastes at most 25%
SMALLEST_BUCKET = 64
WINDOW_TOKENS = (512, 2048)  # SDPA windows: at least / at most this many tokens, else twice the longest segment


def bucket(length: int) -> int:
    """The bucketed length a pass of `length` tokens is padded to (few distinct shapes for compiled code)."""
    if length < 1:
        raise ValueError("a pass has at least one token")
    base = SMALLEST_BUCKET
    while True:
        for step in BUCKET_STEPS:
            size = int(base * step)
            if size >= length:
                return size
        base *= 2


@dataclass(frozen=True)
class Tree:
    """The answer plan's branch tokens, shared by every segment (FeedPlan, as tensors on the device)."""

    tokens: torch.Tensor  # [T] branch token ids
    depths: torch.Tensor  # [T] depth below the trunk's end
    ancestors: torch.Tensor  # [T, T] bool: may branch token i see branch token j
    read_slots: torch.Tensor  # [S] branch indices whose output is read (-1 = the trunk's last token)

    def to(self, device: torch.device) -> Tree:
        return Tree(self.tokens.to(device), self.depths.to(device), self.ancestors.to(device),
                    self.read_slots.to(device))


@dataclass(frozen=True)
class Packed:
    """One scoring pass as one row, on the device. Index tensors are [L] unless said otherwise."""

    input_ids: torch.Tensor
    positions: torch.Tensor  # position ids, as if each segment were alone after the prefix
    segment: torch.Tensor  # owning segment, -1 for padding
    branch: torch.Tensor  # branch-token index, -1 for trunk tokens and padding
    read_index: torch.Tensor  # [N * S]: where each (segment, read slot) is read, segment-major
    windows: tuple[tuple[int, int], ...]  # [start, end) spans of whole segments, for windowed attention
    count: int  # segments
    length: int  # real tokens (the rest, up to input_ids' length, is padding)


def window_limit(sizes: Sequence[int]) -> int:
    """Tokens per SDPA window: attention costs (prefix + window) per token, so small, but not tiny ones."""
    low, high = WINDOW_TOKENS
    return min(high, max(low, 2 * max(sizes)))


def window_spans(sizes: Sequence[int], limit: int) -> tuple[tuple[int, int], ...]:
    """Consecutive segments grouped into spans of at most `limit` tokens (a longer segment gets its own)."""
    spans: list[tuple[int, int]] = []
    start = end = 0
    for size in sizes:
        if end > start and end + size - start > limit:
            spans.append((start, end))
            start = end
        end += size
    spans.append((start, end))
    return tuple(spans)


def pack_ids(trunks: Sequence[Sequence[int]], tree_size: int, pad_id: int, *, padded_length: int | None = None,
             pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU side: the flat token ids of the trunks (branch slots left as pad, filled on the device) and lengths."""
    lengths = [len(t) for t in trunks]
    total = sum(lengths) + tree_size * len(trunks)
    width = padded_length or total
    if width < total:
        raise ValueError(f"padded length {width} < {total} tokens")
    flat: list[int] = []
    blank = [pad_id] * tree_size
    for trunk in trunks:
        flat.extend(trunk)
        flat.extend(blank)
    flat.extend([pad_id] * (width - total))
    ids = torch.tensor(flat, dtype=torch.long)
    trunk_lengths = torch.tensor(lengths, dtype=torch.long)
    if pin:
        ids, trunk_lengths = ids.pin_memory(), trunk_lengths.pin_memory()
    return ids, trunk_lengths


def place(ids: torch.Tensor, trunk_lengths: torch.Tensor, tree: Tree, prefix_length: int,
          windows: tuple[tuple[int, int], ...]) -> Packed:
    """Device side: segment ids, positions and branch indices from the lengths; branch tokens written in."""
    device = ids.device
    count = trunk_lengths.shape[0]
    size = tree.tokens.shape[0]
    sizes = trunk_lengths + size  # [N]
    ends = torch.cumsum(sizes, 0)
    starts = ends - sizes
    length = int(windows[-1][1])
    width = ids.shape[0]
    column = torch.arange(width, device=device)
    segment = torch.repeat_interleave(torch.arange(count, device=device), sizes, output_size=length)
    segment = torch.cat([segment, segment.new_full((width - length,), -1)])
    owner = segment.clamp(min=0)
    offset = column - starts[owner]
    trunk_length = trunk_lengths[owner]
    in_tree = (offset >= trunk_length) & (segment >= 0)
    branch = torch.where(in_tree, offset - trunk_length, -1)
    depth = tree.depths[branch.clamp(min=0)]
    positions = prefix_length + torch.where(in_tree, trunk_length + depth, offset.clamp(min=0))
    positions = torch.where(segment >= 0, positions, prefix_length)
    input_ids = torch.where(in_tree, tree.tokens[branch.clamp(min=0)], ids)
    tree_start = starts + trunk_lengths  # [N]
    read_index = (tree_start[:, None] + tree.read_slots[None, :]).reshape(-1)  # slot -1 = the trunk's last
    return Packed(input_ids, positions, segment, branch, read_index, windows, count, length)


def local_mask(segment: torch.Tensor, branch: torch.Tensor, ancestors: torch.Tensor, queries: slice,
               keys: slice) -> torch.Tensor:
    """[q, k] bool over the packed row: same segment, causal over the trunk, ancestor-or-self in the tree."""
    q_seg, k_seg = segment[queries, None], segment[None, keys]
    q_branch, k_branch = branch[queries, None], branch[None, keys]
    q_col = torch.arange(queries.start, queries.stop, device=segment.device)[:, None]
    k_col = torch.arange(keys.start, keys.stop, device=segment.device)[None, :]
    size = ancestors.shape[0]
    related = ancestors.reshape(-1)[q_branch.clamp(min=0) * size + k_branch.clamp(min=0)]  # a flat gather: cheaper
    seen = torch.where(k_branch >= 0, (q_branch >= 0) & related, k_col <= q_col)
    return (q_seg == k_seg) & (k_seg >= 0) & seen


def mask_mod_for(segment: torch.Tensor, branch: torch.Tensor, ancestors: torch.Tensor, prefix_length: int
                 ) -> object:
    """FlexAttention's mask_mod over [prefix | packed row]: every query sees the prefix, then local_mask."""

    def mask_mod(batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        local = (key - prefix_length).clamp(min=0)
        q_branch, k_branch = branch[query], branch[local]
        related = ancestors[q_branch.clamp(min=0), k_branch.clamp(min=0)]
        seen = torch.where(k_branch >= 0, (q_branch >= 0) & related, local <= query)
        same = (segment[query] == segment[local]) & (segment[local] >= 0)
        return (key < prefix_length) | (same & seen)

    return mask_mod
