"""Real peft LoRA adapters for tests: saved like notif-train saves them, with or without a contract file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import run_python, subprocess_env
from worker.model.loading import CONTRACT_FILE
from worker.synth.sampler import iter_raw_notifications


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


def classify_with_worker(model: Path, adapter: Path | None, tmp_path: Path) -> list[dict[str, Any]]:
    """`notif-worker classify` of 40 synthetic notifications in a subprocess; its JSONL results."""
    source = tmp_path / "in.jsonl"
    stream = iter_raw_notifications(seed=11)
    source.write_text("".join(json.dumps(next(stream)) + "\n" for _ in range(40)))
    out = tmp_path / ("adapted.jsonl" if adapter else "bare.jsonl")
    extra = ["--adapter", str(adapter)] if adapter else []
    done = run_python(["-m", "worker", "classify", str(source), "--out", str(out), "--model", str(model),
                       "--quantization", "none", "--device", "cpu", *extra], env=subprocess_env(), timeout_s=240)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]
