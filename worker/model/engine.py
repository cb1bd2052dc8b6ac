"""The fast scoring engine: a packed row through FastQwen3, prefix KV once, prepare apart from run.

`prepare(trunks)` is the CPU side (token ids concatenated into pinned memory, copied without blocking, the
layout and the masks derived on the device); `run(prepared)` launches the pass and `launch` brings the
choice tokens' logits back without blocking, so the classifier prepares batch n+1 while the GPU computes
batch n. Each pass takes one route: on CUDA, a captured CUDA graph for a short pass (cuda_graphs.py, bucketed
lengths), compiled FlexAttention with a block mask from the segment ids for a long one; on the CPU, SDPA
within windows of whole segments (a dense mask per window, built from the ids), because eager FlexAttention
materialises the whole score matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from worker.model.answer_trie import FeedPlan
from worker.model.cuda_graphs import GRAPH_MAX_TOKENS, GraphedPasses
from worker.model.fast_qwen3 import Attend, FastQwen3, UnsupportedModel
from worker.model.packing import (
    Packed,
    Tree,
    bucket,
    local_mask,
    mask_mod_for,
    pack_ids,
    place,
    window_limit,
    window_spans,
)
from worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A pass ready to run: the packed row on the device and its attention (masks or a block mask)."""

    packed: Packed
    route: str  # graph (a captured CUDA graph), flex (FlexAttention) or windows (SDPA per window)
    masks: tuple[torch.Tensor, ...] = ()  # windows: [w, P + w] additive mask per window
    block_mask: Any = None  # flex: a BlockMask over [L, P + L]


@dataclass(frozen=True)
class Pending:
    """A launched pass: its logits [N, S, C] on the host once `event` has completed."""

    host: torch.Tensor
    event: Any  # torch.cuda.Event, None on the CPU (the pass has finished when launch returns)

    def wait(self) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.host


class FastEngine:
    """Scores packed passes with a FastQwen3; the prefix's keys and values are computed once, at start."""

    def __init__(self, model: Any, dtype: torch.dtype, device: torch.device, *, prefix_ids: Sequence[int],
                 tree: Tree, choice_head: torch.Tensor, pad_id: int, cuda_graphs: bool = True,
                 eager_flex: bool = False) -> None:
        """`eager_flex`: FlexAttention without compiling (materialises every score; for checking it on a CPU)."""
        self.net = FastQwen3(model, dtype)
        self.device = device
        self.pad_id = pad_id
        self.tree = tree.to(device)
        self.tree_size = int(tree.tokens.shape[0])
        self.slots = int(tree.read_slots.shape[0])
        self.choice_head = choice_head.to(device=device, dtype=dtype)
        self.prefix_length = len(prefix_ids)
        with torch.inference_mode():
            self.prefix = self.net.prefix_kv(torch.tensor(list(prefix_ids), device=device))
        self.flex: Callable[..., torch.Tensor] | None = None
        self.graphs: GraphedPasses | None = None
        self._mask_mods: dict[int, tuple[torch.Tensor, torch.Tensor, Any]] = {}
        if eager_flex:
            from torch.nn.attention.flex_attention import flex_attention

            self.flex = flex_attention
        elif device.type == "cuda":
            self._setup_cuda(cuda_graphs)

    @property
    def attention(self) -> str:
        """How long passes attend; short ones replay a CUDA graph when `graphs` is set."""
        return "flex" if self.flex is not None else "sdpa-windows"

    def weight_bytes(self) -> int:
        return self.net.weight_bytes()

    # --- CPU side ---------------------------------------------------------------------------------------

    def prepare(self, trunks: Sequence[Sequence[int]]) -> Prepared:
        sizes = [len(t) + self.tree_size for t in trunks]
        total = sum(sizes)
        if self.graphs is not None and self.graphs.covers(bucket(total)):
            route = "graph"
        else:
            route = "flex" if self.flex is not None else "windows"
        windows = window_spans(sizes, window_limit(sizes)) if route == "windows" else ((0, total),)
        ids, lengths = pack_ids(trunks, self.tree_size, self.pad_id,
                                padded_length=None if route == "windows" else bucket(total),
                                pin=self.device.type == "cuda")
        ids = ids.to(self.device, non_blocking=True)
        lengths = lengths.to(self.device, non_blocking=True)
        packed = place(ids, lengths, self.tree, self.prefix_length, windows)
        if route == "windows":
            return Prepared(packed, route, tuple(self._window_mask(packed, start, end) for start, end in windows))
        return Prepared(packed, route, (), self._block_mask(packed) if route == "flex" else None)

    def _window_mask(self, packed: Packed, start: int, end: int) -> torch.Tensor:
        """[w, P + w] additive mask of one window (SDPA's CPU kernels take an additive mask fastest)."""
        seen = local_mask(packed.segment, packed.branch, self.tree.ancestors, slice(start, end), slice(start, end))
        mask = torch.zeros(end - start, self.prefix_length + end - start, dtype=self.net.dtype, device=self.device)
        mask[:, self.prefix_length:].masked_fill_(~seen, torch.finfo(self.net.dtype).min)
        return mask

    # --- device side ------------------------------------------------------------------------------------

    def launch(self, prepared: Prepared) -> Pending:
        """Start the pass; on CUDA its logits come back to pinned memory without blocking (wait() reads them)."""
        logits = self.run(prepared)
        if self.device.type != "cuda":
            return Pending(logits, None)
        host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
        host.copy_(logits, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Pending(host, event)

    def run(self, prepared: Prepared) -> torch.Tensor:
        """[N, S, C] float logits of the choice tokens at every read slot of every segment (on the device)."""
        packed = prepared.packed
        if prepared.route == "graph" and self.graphs is not None:
            hidden = self.graphs.run(packed.input_ids, packed.positions, packed.segment, packed.branch)
        else:
            hidden = self.net.forward(packed.input_ids, packed.positions, self._attends(prepared))
        return self.read(hidden, packed)

    def read(self, hidden: torch.Tensor, packed: Packed) -> torch.Tensor:
        """The choice tokens' logits at the read slots: final norm and output layer on those rows only."""
        picked = self.net.final_norm(hidden[packed.read_index])  # [N * S, hidden]
        return F.linear(picked, self.choice_head).float().view(packed.count, self.slots, -1)

    def _attends(self, prepared: Prepared) -> list[Attend]:
        if prepared.block_mask is not None:
            return [self._flex_attend(k, v, prepared.block_mask) for k, v in self.prefix]
        return [self._window_attend(k, v, prepared) for k, v in self.prefix]

    def _window_attend(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, prepared: Prepared) -> Attend:
        scale = self.net.scale

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            outs = []
            for (start, end), mask in zip(prepared.packed.windows, prepared.masks, strict=True):
                keys = torch.cat([prefix_k, k[:, :, start:end]], dim=2)
                values = torch.cat([prefix_v, v[:, :, start:end]], dim=2)
                outs.append(F.scaled_dot_product_attention(q[:, :, start:end], keys, values, attn_mask=mask,
                                                           scale=scale, enable_gqa=True))
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

        return attend

    def _flex_attend(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, block_mask: Any) -> Attend:
        flex, scale = self.flex, self.net.scale
        assert flex is not None

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys = torch.cat([prefix_k, k], dim=2)
            values = torch.cat([prefix_v, v], dim=2)
            return flex(q, keys, values, block_mask=block_mask, scale=scale, enable_gqa=True)

        return attend

    def _block_mask(self, packed: Packed) -> Any:
        """The block mask of a bucketed length; its mask_mod reads per-bucket buffers (fixed addresses, so
        compiled code and CUDA graphs see the same tensors every call), refilled from this pass's ids."""
        from torch.nn.attention.flex_attention import create_block_mask

        length = packed.input_ids.shape[0]
        if length not in self._mask_mods:
            segment, branch = torch.empty_like(packed.segment), torch.empty_like(packed.branch)
            self._mask_mods[length] = (segment, branch, mask_mod_for(segment, branch, self.tree.ancestors,
                                                                     self.prefix_length))
        segment, branch, mask_mod = self._mask_mods[length]
        segment.copy_(packed.segment)
        branch.copy_(packed.branch)
        return create_block_mask(mask_mod, None, None, length, self.prefix_length + length, device=self.device,
                                 _compile=self.device.type == "cuda")

    # --- CUDA: compiled FlexAttention for long passes, CUDA graphs for short ones ------------------------------

    def _setup_cuda(self, use_graphs: bool) -> None:
        """Compiled FlexAttention, then the CUDA graphs; a failure of either is logged and leaves the path
        that works everywhere (SDPA windows, eager launches)."""
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        # one compiled kernel per bucketed length until dynamic shapes kick in: more than the default 8
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
        setattr(config, limit, max(getattr(config, limit), 64))
        try:
            self.flex = torch.compile(flex_attention)
            self._warm_up(GRAPH_MAX_TOKENS + 1000)
            self._warm_up(2 * GRAPH_MAX_TOKENS + 1000)  # a second length: dynamic shapes from here on
        except Exception as exc:
            log.warning("FlexAttention unavailable (%s: %s); SDPA windows instead", type(exc).__name__, exc)
            self.flex = None
        if not use_graphs:
            return
        try:
            with torch.inference_mode():
                self.graphs = GraphedPasses(self.net, self.prefix, self.tree, self.device)
            self._warm_up(100)
        except Exception as exc:
            log.warning("CUDA graphs unavailable (%s: %s); eager passes", type(exc).__name__, exc)
            self.graphs = None

    def _warm_up(self, tokens: int) -> None:
        with torch.inference_mode():
            self.run(self.prepare([[self.pad_id] * (tokens - self.tree_size)]))
        torch.cuda.synchronize(self.device)


def build_engine(model: Any, settings: Settings, dtype: torch.dtype, device: torch.device, *,
                 prefix_ids: Sequence[int], plan: FeedPlan, read_slots: Sequence[int],
                 choice_head: torch.Tensor | None, pad_id: int) -> FastEngine | None:
    """The fast engine NOTIF_ENGINE asks for, or None for the reference (asked for, auto on the CPU, or a model
    the fast engine cannot run)."""
    if settings.engine == "reference" or (settings.engine == "auto" and device.type != "cuda"):
        return None  # on the CPU the reference measured faster (docs/PERFORMANCE.md, "Scoring engines")
    try:
        if choice_head is None:
            raise UnsupportedModel("the output layer is adapted or quantized")
        if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 5):
            raise UnsupportedModel(f"torch {torch.__version__} has no native GQA in SDPA (2.5 has)")
        tree = Tree(tokens=torch.tensor(plan.tokens, dtype=torch.long),
                    depths=torch.tensor(plan.depths, dtype=torch.long),
                    ancestors=torch.tensor(plan.ancestors(), dtype=torch.bool),
                    read_slots=torch.tensor(list(read_slots), dtype=torch.long))
        engine = FastEngine(model, dtype, device, prefix_ids=prefix_ids, tree=tree, choice_head=choice_head,
                            pad_id=pad_id, cuda_graphs=settings.engine_cuda_graphs)
    except UnsupportedModel as exc:
        log.warning("NOTIF_ENGINE=fast cannot run this model (%s); the reference engine scores instead", exc)
        return None
    log.info("fast engine: attention %s, CUDA graphs %s, %.1f MiB of dense weights", engine.attention,
             engine.graphs is not None, engine.weight_bytes() / 2**20)
    return engine
