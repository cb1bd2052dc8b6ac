"""The run's plan (parameters, examples, steps) and the LoRA setup shared by --dry-run and training.

--dry-run builds the model on the meta device from its config alone, so it needs no weights and no
memory: on Qwen3-0.6B's config with 12,000 examples it prints the reference's 10,092,544 trainable
parameters and 2,250 optimizer steps.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer import TrainerError
from trainer.config import TrainConfig, optimizer_steps
from trainer.data import Dataset, read_dataset


class PlanError(TrainerError):
    """The model's config cannot be read or LoRA cannot be attached to it."""


@dataclass(frozen=True)
class Plan:
    model: str
    quantization: str
    trainable_parameters: int
    total_parameters: int
    examples: int
    world_size: int
    effective_batch: int
    optimizer_steps: int
    warmup_steps: int

    def lines(self) -> list[str]:
        share = 100.0 * self.trainable_parameters / self.total_parameters
        return [
            f"model                 {self.model} (quantization: {self.quantization})",
            f"trainable parameters  {self.trainable_parameters:,} ({share:.2f}%)",
            f"total parameters      {self.total_parameters:,}",
            f"examples              {self.examples:,}",
            f"effective batch       {self.effective_batch} ({self.world_size} process(es))",
            f"optimizer steps       {self.optimizer_steps:,} (warm-up {self.warmup_steps:,})",
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def world_size() -> int:
    """Processes in this run: set by `accelerate launch` / torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.modules(), bias="none", task_type="CAUSAL_LM",
    )


def count_parameters(peft_model: Any) -> tuple[int, int]:
    """(trainable, total) as peft counts them (4-bit weights counted at their unpacked size)."""
    trainable, total = peft_model.get_nb_trainable_parameters()
    return int(trainable), int(total)


def warmup_steps(steps: int, config: TrainConfig) -> int:
    return math.ceil(steps * config.warmup_ratio)


def make_plan(config: TrainConfig, trainable: int, total: int, examples: int) -> Plan:
    size = world_size()
    steps = optimizer_steps(examples, config, size)
    return Plan(
        model=config.model, quantization=config.quantization, trainable_parameters=trainable,
        total_parameters=total, examples=examples, world_size=size,
        effective_batch=config.batch_size * config.grad_accum * size,
        optimizer_steps=steps, warmup_steps=warmup_steps(steps, config),
    )


def dry_run(config: TrainConfig) -> tuple[Plan, Dataset]:
    """The plan from the model's config on the meta device, and the validated data file."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(config.model)
    except Exception as exc:
        raise PlanError(f"cannot read the config of {config.model!r}: {type(exc).__name__}: {exc}") from exc
    with torch.device("meta"):  # tensors without storage; tied embeddings stay tied
        model = AutoModelForCausalLM.from_config(model_config)
        try:
            peft_model = get_peft_model(model, lora_config(config))
        except ValueError as exc:
            raise PlanError(f"LoRA cannot be attached: {exc}") from exc
    trainable, total = count_parameters(peft_model)
    dataset = read_dataset(Path(config.data), limit=config.limit)
    return make_plan(config, trainable, total, len(dataset.examples)), dataset
