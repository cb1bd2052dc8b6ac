"""The training settings: every knob listed once with its default and meaning; CLI flags come from here.

The defaults are the reference recipe (Qwen3-0.6B, NF4 + double quant + bf16 compute, LoRA r=16
alpha=16 on the 7 projections, 3 epochs, batch 4 x accumulation 4, lr 2e-4 cosine, warmup 0.1).
The resolved object is saved as training_config.json next to the adapter.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from trainer import TrainerError
from worker.settings import Settings

ALL_PROJECTIONS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


class ConfigError(TrainerError):
    """A training setting is out of range or contradicts another."""


def setting(default: Any, help: str) -> Any:
    """A dataclass field whose help text becomes the CLI flag's help."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # --- model ------------------------------------------------------------------------------------
    model: str = setting(Settings.model_fields["model"].default, "base model: hub id or local directory")
    quantization: Literal["nf4", "none"] = setting("nf4", "nf4: QLoRA (4-bit base); none: LoRA, full weights")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = setting(
        "auto", "compute dtype; auto = bf16 for nf4 or on GPU, float32 for a full-weight CPU run")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N (under accelerate launch: each rank's own GPU)")
    # --- data -------------------------------------------------------------------------------------
    data: str = setting("train.jsonl", "training file: chat or flat JSONL")
    limit: int | None = setting(None, "train on the first N valid examples only")
    max_input_tokens: int = setting(
        Settings.model_fields["max_input_tokens"].default, "user-message token budget (keep it the worker's)")
    val_data: str | None = setting(None, "validation file (same formats): its loss and token accuracy are reported")
    eval_steps: int | None = setting(None, "optimizer steps between validations (default: once, at the end)")
    # --- LoRA -------------------------------------------------------------------------------------
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(16, "LoRA scale numerator (scale = alpha / r)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input")
    target_modules: str = setting(ALL_PROJECTIONS, "comma-separated module names that get LoRA")
    # --- optimisation -----------------------------------------------------------------------------
    epochs: int = setting(3, "passes over the training set")
    max_steps: int | None = setting(None, "stop after this many optimizer steps (smoke runs)")
    batch_size: int = setting(4, "examples per micro-batch (per GPU)")
    grad_accum: int = setting(4, "micro-batches per optimizer step")
    lr: float = setting(2e-4, "peak learning rate (AdamW)")
    lr_schedule: Literal["cosine", "linear", "constant"] = setting("cosine", "decay after warm-up")
    warmup_ratio: float = setting(0.1, "share of the optimizer steps spent warming up linearly")
    weight_decay: float = setting(0.0, "AdamW weight decay on the LoRA weights")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)")
    seed: int = setting(0, "seed of LoRA init, dropout and shuffling")
    # --- speed (the same arithmetic; the GPU figures are in docs/TRAINING.md) -----------------------
    micro_batch: int | None = setting(
        None, "examples per forward pass (default: batch x accumulation in one pass); must divide it")
    lora_dtype: Literal["auto", "bfloat16", "float32"] = setting(
        "auto", "dtype of the LoRA weights and their AdamW state; auto = the compute dtype")
    dequantize_base: bool = setting(
        False, "hold the NF4 base dequantized (its exact NF4 values) in the compute dtype: no per-call dequantization")
    torch_compile: bool = setting(False, "torch.compile the model (pays off on a GPU only, if at all)")
    liger: bool = setting(False, "Liger's Triton kernels for RMSNorm, RoPE and SwiGLU (GPU; needs liger-kernel)")
    # --- the weak medium priority -----------------------------------------------------------------
    sampling: Literal["natural", "balanced"] = setting(
        "natural", "balanced: draw each epoch with replacement so the 3 priorities are equally frequent")
    label_weighting: Literal["none", "balanced"] = setting(
        "none", "balanced: weight the folder-name and priority-digit tokens' loss by inverse class frequency")
    # --- output -----------------------------------------------------------------------------------
    out: str = setting("adapter", "output directory of the adapter")
    log_every: int = setting(10, "optimizer steps between loss/accuracy log lines")
    save_steps: int | None = setting(None, "optimizer steps between checkpoints (OUT/checkpoint-N; default: none)")
    resume: bool = setting(False, "continue from the latest checkpoint-N in --out (same settings)")
    report_to: Literal["none", "tensorboard"] = setting(
        "none", "tensorboard: event files under OUT/runs (needs the tensorboard extra: tensorboardX)")
    dry_run: bool = setting(False, "build the model on the meta device from its config and print the plan")

    def check(self) -> TrainConfig:
        positive = ("lora_r", "lora_alpha", "epochs", "batch_size", "grad_accum", "log_every",
                    "max_input_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.modules():
            raise ConfigError("target_modules is empty")
        for name in ("eval_steps", "save_steps", "micro_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_steps is not None and self.val_data is None:
            raise ConfigError("eval_steps needs val_data")
        if self.dequantize_base and self.quantization != "nf4":
            raise ConfigError("dequantize_base needs quantization nf4")
        if (self.batch_size * self.grad_accum) % self.forward_batch():
            raise ConfigError(f"micro_batch {self.micro_batch} does not divide batch_size x grad_accum "
                              f"({self.batch_size * self.grad_accum})")
        return self

    def forward_batch(self) -> int:
        """Examples per forward pass: the whole optimizer step's unless micro_batch says less."""
        return self.micro_batch or self.batch_size * self.grad_accum

    def modules(self) -> list[str]:
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]

    def model_settings(self, device: str) -> Settings:
        """The worker's Settings for loading this base model (one loading path for both)."""
        return Settings.model_validate({
            "model": self.model, "quantization": self.quantization, "dtype": self.dtype, "device": device,
            "max_input_tokens": self.max_input_tokens,
        })

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def optimizer_steps(examples: int, config: TrainConfig, world_size: int = 1) -> int:
    """Optimizer steps of the whole run: ceil(examples / (batch x accumulation x GPUs)) per epoch."""
    micro_batches = math.ceil(examples / (config.batch_size * world_size))
    steps = math.ceil(micro_batches / config.grad_accum) * config.epochs
    return min(steps, config.max_steps) if config.max_steps is not None else steps


# --- CLI flags from the fields ---------------------------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """One `--flag` per TrainConfig field (underscores become dashes), defaulting to ``defaults``."""
    hints = get_type_hints(TrainConfig)
    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        kind = hints[item.name]
        help_text = f"{item.metadata['help']} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif getattr(kind, "__origin__", None) is Literal:
            parser.add_argument(flag, choices=get_args(kind), default=default, help=help_text)
        else:
            parser.add_argument(flag, type=_scalar(kind), default=default, help=help_text)


def _scalar(kind: Any) -> Any:
    """int | None -> int; the CLI cannot spell None, so optional flags are simply left out."""
    if isinstance(kind, types.UnionType):
        return next(arg for arg in get_args(kind) if arg is not type(None))
    return kind


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values).check()
