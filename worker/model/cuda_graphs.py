"""CUDA graphs of small scoring passes, one per bucketed length, so batches of 1-16 are not dispatch-bound.

A pass of a few hundred tokens costs the GPU less than Python and the kernel launches of 28 layers cost
the CPU. Each bucketed length (packing.bucket) up to GRAPH_MAX_TOKENS gets one graph, captured at start-up:
the pass writes its ids, positions, segment and branch ids into the graph's fixed input buffers and
replays it. Inside the graph the mask is derived from those buffers (dense over [L, prefix + L], small at
these lengths) and attention is SDPA with native GQA, so only plain kernels are captured. `dense_pass` is
the captured computation; it runs on the CPU too, which is how it is tested without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from worker.model.fast_qwen3 import Attend, FastQwen3
from worker.model.packing import Tree, bucket, local_mask

GRAPH_MAX_TOKENS = 2048  # longer passes run eagerly (compiled FlexAttention): launches matter less there


def graph_sizes(max_tokens: int = GRAPH_MAX_TOKENS) -> list[int]:
    """Every bucketed length up to max_tokens, largest first (captured in that order, sharing one pool)."""
    sizes = {bucket(n) for n in range(1, max_tokens + 1)}
    return sorted((s for s in sizes if s <= max_tokens), reverse=True)


def dense_pass(net: FastQwen3, prefix: list[tuple[torch.Tensor, torch.Tensor]], ancestors: torch.Tensor,
               ids: torch.Tensor, positions: torch.Tensor, segment: torch.Tensor, branch: torch.Tensor
               ) -> torch.Tensor:
    """Hidden states [L, hidden] of a padded packed row, its mask derived in place from the segment ids."""
    length = ids.shape[0]
    prefix_length = prefix[0][0].shape[2]
    seen = local_mask(segment, branch, ancestors, slice(0, length), slice(0, length))
    mask = torch.cat([seen.new_ones(length, prefix_length), seen], dim=1)  # padding sees the prefix: no empty row

    def attend_with(prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> Attend:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=net.scale, enable_gqa=True)

        return attend

    return net.forward(ids, positions, [attend_with(k, v) for k, v in prefix])


class GraphedPasses:
    """One captured CUDA graph per bucketed length up to GRAPH_MAX_TOKENS; `run` replays the right one."""

    def __init__(self, net: FastQwen3, prefix: list[tuple[torch.Tensor, torch.Tensor]], tree: Tree,
                 device: torch.device, max_tokens: int = GRAPH_MAX_TOKENS) -> None:
        self.net, self.prefix, self.ancestors, self.device = net, prefix, tree.ancestors, device
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[Any, dict[str, torch.Tensor], torch.Tensor]] = {}
        for size in graph_sizes(max_tokens):
            self.graphs[size] = self._capture(size)

    def _capture(self, size: int) -> tuple[Any, dict[str, torch.Tensor], torch.Tensor]:
        prefix_length = self.prefix[0][0].shape[2]
        inputs = {
            "ids": torch.zeros(size, dtype=torch.long, device=self.device),
            "positions": torch.full((size,), prefix_length, dtype=torch.long, device=self.device),
            "segment": torch.full((size,), -1, dtype=torch.long, device=self.device),
            "branch": torch.full((size,), -1, dtype=torch.long, device=self.device),
        }

        def body() -> torch.Tensor:
            return dense_pass(self.net, self.prefix, self.ancestors, inputs["ids"], inputs["positions"],
                              inputs["segment"], inputs["branch"])

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up run: kernels chosen and loaded before capture
            body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the reader thread may be waiting on an earlier batch's event meanwhile (a swap captures
        # while batches are in flight); under the default "global" mode that CUDA call would break the capture
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = body()
        return graph, inputs, out

    def covers(self, length: int) -> bool:
        return length in self.graphs

    def run(self, ids: torch.Tensor, positions: torch.Tensor, segment: torch.Tensor, branch: torch.Tensor
            ) -> torch.Tensor:
        """Hidden states [L, hidden]: the graph's output buffer, valid until the next replay."""
        graph, inputs, out = self.graphs[ids.shape[0]]
        inputs["ids"].copy_(ids, non_blocking=True)
        inputs["positions"].copy_(positions, non_blocking=True)
        inputs["segment"].copy_(segment, non_blocking=True)
        inputs["branch"].copy_(branch, non_blocking=True)
        graph.replay()
        return out
