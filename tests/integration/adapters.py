"""Real peft LoRA adapters for tests: saved like notif-train saves them, with or without a contract file."""

from __future__ import annotations

import json
from pathlib import Path

from worker.model.loading import CONTRACT_FILE


def make_adapter(base: str, out: Path, *, contract: dict[str, str] | None, seed: int | None = None) -> Path:
    """A LoRA adapter on ``base``; with ``seed``, random (not zero) B matrices, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = (LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]) if seed is None else
              LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                         init_lora_weights=False))
    get_peft_model(model, config).save_pretrained(str(out))
    if contract is not None:
        (out / CONTRACT_FILE).write_text(json.dumps(contract))
    return out
