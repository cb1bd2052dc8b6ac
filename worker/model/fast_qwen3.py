"""A Qwen3 decoder held ready for scoring: plain dense weights, LoRA merged, one packed row, native GQA.

Built once from the loaded transformers model (which stays the reference and what the trainer trains):
NF4 weights are dequantized once with bitsandbytes' own dequantize_4bit (the same values bitsandbytes
multiplies with for any input longer than one token), a LoRA adapter's delta is added in float32 and the
sum stored in the compute dtype, and q/k/v and gate/up are fused into one matmul each. The forward takes
the packed row of packing.py: queries attend to ONE copy of the system prefix's keys and values plus their
own segment, never to per-row copies; K/V keep their 8 heads (SDPA/FlexAttention GQA, no repeat).
RMSNorm and the rotary embedding are the model's own modules, so the arithmetic is the reference's.

Exceptions: UnsupportedModel says why a model cannot run here (the caller then uses the reference engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (q, k, v) [1, H, L, D] -> out
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UnsupportedModel(ValueError):
    """The fast engine cannot run this model exactly; the message says what it lacks."""


@dataclass
class Layer:
    input_norm: Any  # the model's own RMSNorm modules
    q_norm: Any
    k_norm: Any
    post_norm: Any
    qkv: torch.Tensor  # [(Hq + 2 Hkv) D, hidden]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # [hidden, Hq D]
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor  # [2 I, hidden]
    down: torch.Tensor  # [hidden, I]


def dense_weight(module: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a Linear, a bitsandbytes Linear4bit or a peft LoRA layer over either, dense in `dtype`."""
    base = getattr(module, "base_layer", module)
    weight = base.weight
    if type(weight).__name__ == "Params4bit":
        from bitsandbytes.functional import dequantize_4bit

        dense = dequantize_4bit(weight.data, weight.quant_state)
    elif isinstance(base, torch.nn.Linear):
        dense = weight.detach()
    else:
        raise UnsupportedModel(f"{type(base).__name__} layers are not supported by the fast engine")
    delta = _lora_delta(module)
    if delta is not None:
        dense = (dense.float() + delta.float().to(dense.device)).to(dtype)
    bias = None if base.bias is None else base.bias.detach().to(dtype)
    return dense.to(dtype), bias


def _lora_delta(module: Any) -> torch.Tensor | None:
    """The summed delta of a peft LoRA layer's active adapters (None for a plain layer or a merged one)."""
    if not hasattr(module, "lora_A") or getattr(module, "merged", False):
        return None
    total = None
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if getattr(module, "use_dora", {}).get(name):
            raise UnsupportedModel("DoRA adapters are not supported by the fast engine")
        delta = module.get_delta_weight(name)
        total = delta if total is None else total + delta
    return total


def check_supported(config: Any) -> None:
    """Refuse what this implementation does not compute like transformers' Qwen3 does."""
    if getattr(config, "model_type", None) != "qwen3":
        raise UnsupportedModel(f"model type {getattr(config, 'model_type', None)!r} is not qwen3")
    if getattr(config, "use_sliding_window", False) or any(
            kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        raise UnsupportedModel("sliding-window attention layers are not supported")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"activation {config.hidden_act!r} is not silu")


class FastQwen3:
    """The decoder body of a loaded Qwen3 as dense tensors; `forward` runs one packed row."""

    def __init__(self, model: Any, dtype: torch.dtype) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        check_supported(config)
        decoder = base.get_decoder()
        self.dtype = dtype
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", config.hidden_size // self.heads)
        self.scale = self.head_dim ** -0.5
        self.embed = decoder.embed_tokens
        self.norm = decoder.norm
        self.rotary = decoder.rotary_emb
        self.layers = [self._layer(layer) for layer in decoder.layers]

    def _layer(self, layer: Any) -> Layer:
        attention, mlp = layer.self_attn, layer.mlp
        q, q_bias = dense_weight(attention.q_proj, self.dtype)
        k, k_bias = dense_weight(attention.k_proj, self.dtype)
        v, v_bias = dense_weight(attention.v_proj, self.dtype)
        o, o_bias = dense_weight(attention.o_proj, self.dtype)
        gate, gate_bias = dense_weight(mlp.gate_proj, self.dtype)
        up, up_bias = dense_weight(mlp.up_proj, self.dtype)
        down, down_bias = dense_weight(mlp.down_proj, self.dtype)
        if gate_bias is not None or up_bias is not None or down_bias is not None:
            raise UnsupportedModel("MLP biases are not supported")
        biases = [b for b in (q_bias, k_bias, v_bias) if b is not None]
        return Layer(
            input_norm=layer.input_layernorm, q_norm=attention.q_norm, k_norm=attention.k_norm,
            post_norm=layer.post_attention_layernorm, qkv=torch.cat([q, k, v]).contiguous(),
            qkv_bias=torch.cat(biases) if len(biases) == 3 else None, o=o, o_bias=o_bias,
            gate_up=torch.cat([gate, up]).contiguous(), down=down,
        )

    def weight_bytes(self) -> int:
        """Bytes of the dense weights this engine holds beside the loaded model."""
        tensors = [t for layer in self.layers for t in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, 1, L, D] from the model's own rotary embedding."""
        probe = torch.empty(0, dtype=self.dtype, device=positions.device)
        cos, sin = self.rotary(probe, positions[None])
        return cos[:, None], sin[:, None]

    def prefix_kv(self, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values [1, Hkv, P, D] of the system prefix in every layer, computed once (causal)."""
        positions = torch.arange(ids.shape[0], device=ids.device)
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kept.append((k, v))
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=True)

        self.forward(ids, positions, [attend] * len(self.layers))
        return kept

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attends: list[Attend]) -> torch.Tensor:
        """Hidden states [L, hidden] of one packed row; `attends[i]` is layer i's attention over its keys."""
        x = self.embed(ids)  # [L, hidden]
        cos, sin = self.rope(positions)
        length = ids.shape[0]
        for layer, attend in zip(self.layers, attends, strict=True):
            h = layer.input_norm(x)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            q, k, v = qkv.split([self.heads * self.head_dim, self.kv_heads * self.head_dim,
                                 self.kv_heads * self.head_dim], dim=-1)
            q = layer.q_norm(q.view(length, self.heads, self.head_dim)).transpose(0, 1)[None]  # [1, Hq, L, D]
            k = layer.k_norm(k.view(length, self.kv_heads, self.head_dim)).transpose(0, 1)[None]
            v = v.view(length, self.kv_heads, self.head_dim).transpose(0, 1)[None]
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            out = attend(q, k, v)  # [1, Hq, L, D]
            x = x + F.linear(out[0].transpose(0, 1).reshape(length, -1), layer.o, layer.o_bias)
            h = layer.post_norm(x)
            gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        return x  # type: ignore[no-any-return]

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)  # type: ignore[no-any-return]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
