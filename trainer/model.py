"""The trainable model: the worker's base-model loader, the NF4 base optionally held dequantized, then LoRA.

No prepare_model_for_kbit_training: it would upcast the frozen embeddings, norms and output layer to
float32 (a float32 151,936 x 1024 output layer on every step) and hook input gradients for gradient
checkpointing, which the shared-prefix pass does not use. The frozen base stays in the compute dtype,
as the worker serves it; Qwen3's RMSNorm computes in float32 inside anyway.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.plan import lora_config
from worker.model.loading import load_base_model
from worker.settings import Settings


def trainable_model(config: TrainConfig, settings: Settings, device: torch.device, dtype: torch.dtype) -> Any:
    """The base model as the worker loads it (NF4 or full), LoRA on ``config.modules()`` in its dtype."""
    from peft import get_peft_model

    model = load_base_model(settings, device, dtype)
    if config.dequantize_base:
        dequantize_linears(model, dtype)
    model.requires_grad_(False)
    # autocast_adapter_dtype=False: peft would otherwise hold bf16 adapters in float32 and cast every
    # LoRA input to float32 in the forward (two casts per adapted linear, 196 of them, each pass).
    model = get_peft_model(model, lora_config(config), autocast_adapter_dtype=False)
    lora = lora_dtype(config, dtype)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(lora)
    return model


def lora_dtype(config: TrainConfig, compute: torch.dtype) -> torch.dtype:
    return compute if config.lora_dtype == "auto" else getattr(torch, config.lora_dtype)  # type: ignore[no-any-return]


def dequantize_linears(model: Any, dtype: torch.dtype) -> int:
    """Replace every bitsandbytes 4-bit linear by a frozen nn.Linear holding its dequantized weight.

    The values are the NF4 base's own (bitsandbytes' dequantize_4bit, as the worker's fast engine holds them),
    so the numerics are QLoRA's; the cost is the base in ``dtype`` (1.2 GB for Qwen3-0.6B in bf16) instead
    of 0.4 GB, the saving one dequantization per linear per forward and backward. Returns how many.
    """
    import bitsandbytes as bnb

    from worker.model.fast_qwen3 import dense_weight  # the one home of "a 4-bit linear, dense"

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            weight, bias = dense_weight(child, dtype)
            linear = torch.nn.Linear(child.in_features, child.out_features, bias=bias is not None,
                                     device=weight.device, dtype=dtype)
            linear.weight.data = weight
            if bias is not None:
                linear.bias.data = bias
            setattr(parent, name, linear.requires_grad_(False))
            replaced += 1
    return replaced
