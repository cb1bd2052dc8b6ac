"""Where every token of one scoring pass goes: segments packed into rows (pure layout, then tensors).

A segment is one notification's part of the pass: its prompt tokens after the cached system prefix, the
plan's trunk, then the plan's branch tokens (see answer_trie.FeedPlan). Rows of a pass are as wide as the
widest, and notification lengths differ by 2-3x, so one segment per row wastes about a third of the compute
on padding at large batches. Segments therefore share rows (first-fit decreasing): each attends to the
system prefix and to itself only (block-diagonal causal mask, tree-shaped over the branch tokens), with the
position ids it would have alone, so its logits are those of scoring it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

WIDTH_MULTIPLE = 8  # rows are padded to a multiple of this: few distinct shapes, aligned for the kernels


@dataclass(frozen=True)
class Packing:
    rows: list[list[int]]  # segment indices per row, in column order
    width: int  # columns per row (a multiple of WIDTH_MULTIPLE)

    @property
    def cost(self) -> int:
        """Token columns computed by the pass."""
        return len(self.rows) * self.width


def pack(sizes: Sequence[int], multiple: int = WIDTH_MULTIPLE) -> Packing:
    """Rows for segments of `sizes` tokens: the cheapest of one per row and first-fit decreasing packings.

    A row is never wider than twice the longest segment, which bounds what sharing adds to attention.
    """
    if not sizes:
        raise ValueError("nothing to pack")
    longest = max(sizes)
    best = Packing([[i] for i in range(len(sizes))], _round_up(longest, multiple))
    for capacity in (_round_up(longest * 3 // 2, multiple), _round_up(2 * longest, multiple)):
        candidate = _first_fit_decreasing(sizes, capacity, multiple)
        if candidate.cost < best.cost:
            best = candidate
    return best


def _first_fit_decreasing(sizes: Sequence[int], capacity: int, multiple: int) -> Packing:
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        for r, room in enumerate(free):
            if sizes[index] <= room:
                rows[r].append(index)
                free[r] -= sizes[index]
                break
        else:
            rows.append([index])
            free.append(capacity - sizes[index])
    used = max(capacity - room for room in free)
    return Packing(rows, _round_up(used, multiple))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass
class Pass:
    """The tensors of one packed scoring pass (on the CPU; the caller moves them)."""

    input_ids: torch.Tensor  # [R, W]
    position_ids: torch.Tensor  # [R, W]
    mask: torch.Tensor  # [R, 1, W, prefix + W] bool: may query attend to key
    read_rows: torch.Tensor  # [N * S]: row of each (segment, read slot), segment-major
    read_cols: torch.Tensor  # [N * S]: its column


def build_pass(trunks: Sequence[Sequence[int]], branch_tokens: Sequence[int], branch_depths: Sequence[int],
               ancestors: torch.Tensor, read_slots: Sequence[int], prefix_length: int, pad_id: int) -> Pass:
    """Lay out segments (trunk i + the shared branch tokens) in packed rows after a shared prefix.

    `ancestors` [T, T] says which branch tokens a branch token sees; `read_slots` are branch-token indices
    whose output is wanted (-1 = the trunk's last token), read for every segment in that order.
    """
    tree = len(branch_tokens)
    packing = pack([len(t) + tree for t in trunks])
    rows, width = len(packing.rows), packing.width
    ids = [[pad_id] * width for _ in range(rows)]
    positions = [[prefix_length] * width for _ in range(rows)]
    segment = [[-1] * width for _ in range(rows)]  # which segment owns the column (-1: padding)
    branch = [[-1] * width for _ in range(rows)]  # branch-token index of the column (-1: trunk or padding)
    read_rows: list[int] = []
    read_cols: list[int] = [0] * (len(trunks) * len(read_slots))
    starts: dict[int, tuple[int, int]] = {}
    for r, members in enumerate(packing.rows):
        column = 0
        for s in members:
            trunk = trunks[s]
            n = len(trunk)
            starts[s] = (r, column)
            ids[r][column:column + n] = trunk
            ids[r][column + n:column + n + tree] = branch_tokens
            positions[r][column:column + n] = range(prefix_length, prefix_length + n)
            positions[r][column + n:column + n + tree] = [prefix_length + n + d for d in branch_depths]
            segment[r][column:column + n + tree] = [s] * (n + tree)
            branch[r][column + n:column + n + tree] = range(tree)
            column += n + tree
    for s, trunk in enumerate(trunks):
        r, column = starts[s]
        tree_start = column + len(trunk)
        for k, slot in enumerate(read_slots):
            read_cols[s * len(read_slots) + k] = tree_start - 1 if slot < 0 else tree_start + slot
        read_rows.extend([r] * len(read_slots))
    owner = torch.tensor(segment)
    branch_index = torch.tensor(branch)
    local = _local_mask(owner, branch_index, ancestors)
    prefix = torch.ones(rows, width, prefix_length, dtype=torch.bool)
    return Pass(
        input_ids=torch.tensor(ids), position_ids=torch.tensor(positions),
        mask=torch.cat([prefix, local], dim=-1)[:, None],
        read_rows=torch.tensor(read_rows), read_cols=torch.tensor(read_cols),
    )


def _local_mask(owner: torch.Tensor, branch_index: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
    """[R, W, W]: same segment, and causal over the trunk or ancestor-or-self over the branch tokens."""
    width = owner.shape[1]
    columns = torch.arange(width)
    causal = (columns[None, :] <= columns[:, None])[None]  # key <= query
    same = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0)
    query_branch = branch_index[:, :, None]
    key_branch = branch_index[:, None, :]
    related = ancestors[query_branch.clamp(min=0), key_branch.clamp(min=0)]
    # a trunk key is seen causally; a branch key only by a branch query that descends from it
    return same & torch.where(key_branch >= 0, (query_branch >= 0) & related, causal)
