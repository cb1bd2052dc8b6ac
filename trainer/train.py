"""The training script: data, QLoRA model, a plain PyTorch loop with a loss on the answer only, the adapter.

Reads top to bottom: set-up (processes, device, seed), data (validated, rendered by the worker's
contract, tokenized), model (base from worker.model.loading, then LoRA), optimizer and schedule, the loop
(gradient accumulation, clipping, progress bar, loss and token accuracy), and saving (peft's files,
notif_contract.json, training_config.json, training_summary.json). Under `accelerate launch` each
process loads the base model onto its own GPU (per-rank device map, needed for QLoRA + DDP), trains
on its own shard of every epoch and averages gradients through DDP.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from tqdm import tqdm

from trainer import TrainerError
from trainer.batches import IGNORE, Batch, Encoder, collate, epoch_order, label_weights, micro_batches, shard
from trainer.config import TrainConfig
from trainer.data import describe_problems, label_mix, read_dataset
from trainer.plan import Plan, count_parameters, lora_config, make_plan, world_size
from worker.contract import CONTRACT_VERSION, contract_fingerprint
from worker.model.loading import (
    CONTRACT_FILE,
    ModelLoadError,
    load_base_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from worker.settings import Settings

CONFIG_FILE = "training_config.json"
SUMMARY_FILE = "training_summary.json"

T = TypeVar("T")


class TrainingError(TrainerError):
    """Training could not start or could not finish (model not loadable, loss not finite)."""


@dataclass
class StepStats:
    """Sums over the micro-batches of one optimizer step."""

    loss_sum: float = 0.0  # weighted loss summed over trained tokens
    weight: float = 0.0
    correct: int = 0
    tokens: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.weight, 1e-9)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.tokens, 1)


@dataclass(frozen=True)
class Setup:
    """Where and how this process trains."""

    accelerator: Any
    device: torch.device
    dtype: torch.dtype
    settings: Settings
    main: bool


def train(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train an adapter by ``config`` and save it to ``config.out``; returns the training summary."""
    from transformers import get_scheduler

    # --- set-up: processes, device, dtype, seed ----------------------------------------------------
    setup = _setup(config)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)  # the same epoch order on every process; each takes its shard

    # --- data: validated, rendered by the contract, tokenized ---------------------------------------
    dataset = read_dataset(Path(config.data), limit=config.limit)
    _say(setup, [dataset.summary(), *describe_problems(dataset.problems)])
    tokenizer = _checked(load_tokenizer, config.model)
    encoder = Encoder(tokenizer, config.max_input_tokens)
    encoded = [encoder.encode(example) for example in dataset.examples]
    weights = label_weights(encoded, config.label_weighting)

    # --- model: the worker's base-model loader, then LoRA --------------------------------------------
    model = _trainable_model(config, setup)
    trainable, total = count_parameters(model)
    plan = make_plan(config, trainable, total, len(encoded))
    _say(setup, plan.lines())

    # --- optimizer and schedule ----------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=plan.warmup_steps,
                              num_training_steps=plan.optimizer_steps)
    model, optimizer, scheduler = setup.accelerator.prepare(model, optimizer, scheduler)

    # --- the loop: shuffle (or balance), accumulate, clip, step, log ---------------------------------
    model.train()
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    window: list[StepStats] = []
    step = 0
    bar = tqdm(total=plan.optimizer_steps, desc="training", disable=not (progress and setup.main))
    for epoch in range(config.epochs):
        order = shard(epoch_order(encoded, config.sampling, rng), setup.accelerator.process_index, plan.world_size)
        for group in _groups(list(micro_batches(order, config.batch_size)), config.grad_accum):
            if step >= plan.optimizer_steps:
                break
            batches = [collate([encoded[i] for i in ids], encoder.prefix, tokenizer.pad_token_id, weights)
                       for ids in group]
            stats = _optimizer_step(model, batches, setup, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(stats)
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4f}", acc=f"{stats.accuracy:.3f}", epoch=epoch + 1)
            if step % config.log_every == 0 or step == plan.optimizer_steps:
                history.append(_log(step, epoch, window, scheduler.get_last_lr()[0], setup))
                window = []
    bar.close()
    elapsed = time.perf_counter() - started

    # --- save: adapter, contract, resolved config, summary --------------------------------------------
    mix = label_mix(dataset.examples)
    summary = _summary(plan, history, elapsed, setup.device, len(dataset.problems), mix)
    if setup.main:
        save_adapter(setup.accelerator.unwrap_model(model), Path(config.out), config, plan, summary, setup)
    setup.accelerator.wait_for_everyone()
    return summary


def _setup(config: TrainConfig) -> Setup:
    """Under `accelerate launch` each rank owns cuda:LOCAL_RANK; alone, the configured device."""
    from accelerate import Accelerator

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    settings = config.model_settings(f"cuda:{rank}" if world_size() > 1 else config.device)
    device = _checked(resolve_device, settings.device)
    dtype = resolve_dtype(settings, device)
    mixed = "bf16" if device.type == "cuda" and dtype == torch.bfloat16 else "no"
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed, device_placement=False)
    return Setup(accelerator, device, dtype, settings, accelerator.is_main_process)


def _checked(load: Callable[[Any], T], argument: Any) -> T:
    """Call a worker.model.loading loader, turning its ModelLoadError into a TrainingError."""
    try:
        return load(argument)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc


def _trainable_model(config: TrainConfig, setup: Setup) -> Any:
    """The base model as the worker loads it (NF4 or full), prepared for k-bit training, with LoRA."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    try:
        model = load_base_model(setup.settings, setup.device, setup.dtype)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc
    if config.quantization == "nf4":
        # No gradient checkpointing: it cannot keep the shared-prefix cache, and a 0.6B model's
        # activations at batch 4 x ~40 tokens (plus one prefix) are small.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(config))


def _say(setup: Setup, lines: list[str]) -> None:
    if setup.main:
        for line in lines:
            tqdm.write(line)


def _groups(batches: list[list[int]], size: int) -> list[list[list[int]]]:
    return [batches[i:i + size] for i in range(0, len(batches), size)]


def prefix_cache(model: Any, prefix: torch.Tensor, rows: int) -> Any:
    """The shared system prefix's keys and values, computed once (with gradients) and viewed ``rows`` times.

    Gradients from every row flow back through the expanded views into the one prefix pass.
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    model(input_ids=prefix[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
    shared = DynamicCache()
    layers: list[Any] = list(cache.layers)  # [1, kv_heads, P, head_dim] keys and values per layer
    for index, layer in enumerate(layers):
        shared.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), index)
    return shared


def batch_loss(model: Any, batch: Batch, device: torch.device,
               prefix_model: Any = None) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(weighted loss sum, weight sum, correct predictions, trained tokens) of one micro-batch.

    The prefix runs once through ``prefix_model`` (the model itself, or the module inside DDP so that
    DDP sees one forward per backward). Rows are left-padded, so every trained token sits in the last
    ``keep - 1`` columns and the model only computes logits there (logits_to_keep): a full
    [B, S, 151936] logit tensor is never built.
    """
    cache = prefix_cache(prefix_model or model, batch.prefix.to(device), len(batch.input_ids))
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device), past_key_values=cache, use_cache=True,
                logits_to_keep=batch.keep)
    labels = batch.labels[:, -(batch.keep - 1):].to(device)  # [B, keep-1]
    trained = labels != IGNORE
    # Only the positions that have a label, as one contiguous [N, V] block: the softmax over the
    # vocabulary is most of a tiny model's step, and over a transposed [B, V, keep-1] view it is strided.
    logits = out.logits[:, :-1, :][trained].float()  # [N, V]: position t predicts token t+1
    targets = labels[trained]  # [N]
    weights = batch.weights[:, -(batch.keep - 1):].to(device)[trained]
    losses = F.cross_entropy(logits, targets, reduction="none")
    correct = int((logits.detach().argmax(-1) == targets).sum())
    return (losses * weights).sum(), weights.sum(), correct, len(targets)


def _optimizer_step(model: Any, batches: list[Batch], setup: Setup, max_grad_norm: float) -> StepStats:
    """Forward and backward over one accumulation group; the loss is the mean over all its tokens."""
    stats = StepStats()
    inner = setup.accelerator.unwrap_model(model, keep_fp32_wrapper=True)
    total_weight = float(sum(float(b.weights.sum()) for b in batches))
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        with nullcontext() if last else setup.accelerator.no_sync(model):
            loss_sum, weight, correct, tokens = batch_loss(model, batch, setup.device, inner)
            if not torch.isfinite(loss_sum):
                raise TrainingError("the loss is not finite; lower --lr or check the data")
            setup.accelerator.backward(loss_sum / total_weight)
        stats.loss_sum += float(loss_sum.detach())
        stats.weight += float(weight)
        stats.correct += correct
        stats.tokens += tokens
    if max_grad_norm > 0:
        setup.accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    return stats


def _log(step: int, epoch: int, window: list[StepStats], lr: float, setup: Setup) -> dict[str, float]:
    merged = StepStats(sum(s.loss_sum for s in window), sum(s.weight for s in window),
                       sum(s.correct for s in window), sum(s.tokens for s in window))
    entry = {"step": step, "epoch": epoch + 1, "loss": round(merged.loss, 5),
             "token_accuracy": round(merged.accuracy, 5), "lr": lr}
    _say(setup, [f"step {step:>6}  epoch {epoch + 1}  loss {merged.loss:.4f}  "
                 f"token_acc {merged.accuracy:.4f}  lr {lr:.2e}"])
    return entry


def _summary(plan: Plan, history: list[dict[str, float]], elapsed: float, device: torch.device,
             bad_lines: int, mix: dict[str, Any]) -> dict[str, Any]:
    if not history:
        raise TrainingError("no optimizer step ran; the data set is empty for this batch size")
    return {
        "time_s": round(elapsed, 2),
        "first_loss": history[0]["loss"],
        "final_loss": history[-1]["loss"],
        "mean_token_accuracy": history[-1]["token_accuracy"],
        "trainable_parameters": plan.trainable_parameters,
        "total_parameters": plan.total_parameters,
        "examples": plan.examples,
        "bad_lines": bad_lines,
        "label_mix": mix,
        "optimizer_steps": plan.optimizer_steps,
        "device": str(device),
        "world_size": plan.world_size,
        "contract_version": CONTRACT_VERSION,
        "history": history,
    }


def save_adapter(model: Any, out: Path, config: TrainConfig, plan: Plan, summary: dict[str, Any],
                 setup: Setup) -> None:
    """peft's adapter files plus what the worker checks and what a reader needs to reproduce the run."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    (out / CONTRACT_FILE).write_text(json.dumps(contract_fingerprint(), indent=2) + "\n")
    resolved = {**config.to_dict(), "contract_version": CONTRACT_VERSION, "device": str(setup.device),
                "dtype": str(setup.dtype).removeprefix("torch."), "plan": plan.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(resolved, indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
