"""The training script: data, QLoRA model, transformers' Trainer with our answer-only loss, the adapter.

Reads top to bottom: set-up (device, dtype, seed, the checkpoint to resume), data (validated, rendered by
the worker's contract, tokenized by trainer.batches), model (trainer.model), the Trainer's arguments (the
recipe, one forward pass per optimizer step by default, fused AdamW on CUDA, checkpoints, validation,
TensorBoard), training, and saving (peft's files, notif_contract.json, training_config.json,
training_summary.json). Under `accelerate launch` / torchrun each process loads the base model onto its
own GPU (the per-rank device map QLoRA needs under DDP); the Trainer gives each its share of every
epoch and DDP averages the gradients.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from trainer.batches import Collator, Encoded, Encoder, EpochSampler, label_weights
from trainer.config import TrainConfig
from trainer.data import describe_problems, label_mix, read_dataset
from trainer.loop import (
    ContractInCheckpoints,
    LogLastStep,
    NotifTrainer,
    Progress,
    StepTimer,
    TrainingError,
    epoch_number,
)
from trainer.model import trainable_model
from trainer.plan import Plan, count_parameters, make_plan, world_size
from worker.contract import CONTRACT_VERSION
from worker.model.loading import (
    ModelLoadError,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    write_adapter_contract,
)
from worker.settings import Settings

CONFIG_FILE = "training_config.json"
SUMMARY_FILE = "training_summary.json"
TIMING_WARMUP = 10  # optimizer steps left out of seconds_per_step (compilation, allocator, kernel warm-up)

T = TypeVar("T")

__all__ = ["CONFIG_FILE", "SUMMARY_FILE", "TrainingError", "save_adapter", "train"]


@dataclass(frozen=True)
class Setup:
    """Where and how this process trains."""

    device: torch.device
    dtype: torch.dtype
    settings: Settings
    main: bool


def train(config: TrainConfig, *, progress: bool = True, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train an adapter by ``config`` and save it to ``config.out``; returns the training summary.

    ``callbacks``: extra transformers TrainerCallbacks (tests stop a run with one, as a preemption would).
    """
    # --- set-up: device, dtype, seed, what to resume ---------------------------------------------------
    setup = _setup(config)
    torch.manual_seed(config.seed)  # LoRA's initialisation; the Trainer seeds dropout and the rest
    resume = _checkpoint_to_resume(config, setup)
    _check_extras(config)

    # --- data: validated, rendered by the contract, tokenized -------------------------------------------
    dataset = read_dataset(Path(config.data), limit=config.limit)
    _say(setup, [dataset.summary(), *describe_problems(dataset.problems)])
    tokenizer = _checked(load_tokenizer, config.model)
    encoder = Encoder(tokenizer, config.max_input_tokens)
    encoded = [encoder.encode(example) for example in dataset.examples]
    validation = _validation_set(config, encoder, setup)

    # --- model: the worker's base-model loader, then LoRA ------------------------------------------------
    try:
        model = trainable_model(config, setup.settings, setup.device, setup.dtype)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc
    trainable, total = count_parameters(model)
    plan = make_plan(config, trainable, total, len(encoded))
    _say(setup, plan.lines())

    # --- the Trainer: our loss, our epoch order, the recipe's arguments -----------------------------------
    timer = StepTimer(min(TIMING_WARMUP, plan.optimizer_steps // 2))
    trainer = NotifTrainer(
        model=model, args=_arguments(config, plan, setup), train_dataset=encoded, eval_dataset=validation,
        data_collator=Collator(encoder, tokenizer.pad_token_id, label_weights(encoded, config.label_weighting)),
        sampler=EpochSampler(encoded, config.sampling, config.seed, config.batch_size * config.grad_accum),
        callbacks=[LogLastStep(), ContractInCheckpoints(), timer,
                   Progress(lambda line: _say(setup, [line]), progress and setup.main), *callbacks],
    )
    for name in ("PrinterCallback", "ProgressCallback"):  # Progress prints our lines instead of raw dicts
        trainer.callback_handler.callbacks = [c for c in trainer.callback_handler.callbacks
                                              if type(c).__name__ != name]

    # --- train, validate the final weights -----------------------------------------------------------------
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if validation is not None and not _evaluated_at(trainer.state.log_history, trainer.state.global_step):
        trainer.evaluate()
    elapsed = time.perf_counter() - started

    # --- save: adapter, contract, resolved config, summary -------------------------------------------------
    summary = _summary(plan, trainer.state, elapsed, setup.device, len(dataset.problems),
                       label_mix(dataset.examples), timer, resume)
    if trainer.is_world_process_zero():
        save_adapter(trainer.model, Path(config.out), config, plan, summary, setup)
    trainer.accelerator.wait_for_everyone()
    return summary


def _setup(config: TrainConfig) -> Setup:
    """Under `accelerate launch` each rank owns cuda:LOCAL_RANK; alone, the configured device."""
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    settings = config.model_settings(f"cuda:{rank}" if world_size() > 1 else config.device)
    device = _checked(resolve_device, settings.device)
    return Setup(device, resolve_dtype(settings, device), settings, int(os.environ.get("RANK", "0")) == 0)


def _checked(load: Callable[[Any], T], argument: Any) -> T:
    """Call a worker.model.loading loader, turning its ModelLoadError into a TrainingError."""
    try:
        return load(argument)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc


def _checkpoint_to_resume(config: TrainConfig, setup: Setup) -> Path | None:
    """--resume: the latest checkpoint-N in --out (said in the log); none there is an error."""
    if not config.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.out)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is None:
        raise TrainingError(f"--resume: no checkpoint-N directory in {out}; train with --save-steps first")
    state = json.loads((Path(last) / "trainer_state.json").read_text())
    _say(setup, [f"resuming from {last} (optimizer step {state['global_step']})"])
    return Path(last)


def _check_extras(config: TrainConfig) -> None:
    """What an optional flag needs, checked before minutes of loading and tokenizing."""
    if config.report_to == "tensorboard" and not any(
            importlib.util.find_spec(name) for name in ("tensorboardX", "tensorboard")):
        raise TrainingError("--report-to tensorboard needs tensorboardX: pip install 'notif-triage[tensorboard]'")
    if config.liger and importlib.util.find_spec("liger_kernel") is None:
        raise TrainingError("--liger needs Liger's kernels: pip install liger-kernel (CUDA and Triton only)")


def _validation_set(config: TrainConfig, encoder: Encoder, setup: Setup) -> list[Encoded] | None:
    if config.val_data is None:
        return None
    dataset = read_dataset(Path(config.val_data))
    _say(setup, [f"validation: {dataset.summary()}", *describe_problems(dataset.problems)])
    return [encoder.encode(example) for example in dataset.examples]


def _arguments(config: TrainConfig, plan: Plan, setup: Setup) -> Any:
    """The recipe as TrainingArguments: the Trainer's own step count and schedule are pinned to the plan."""
    from transformers import TrainingArguments

    cuda = setup.device.type == "cuda"
    return TrainingArguments(
        output_dir=config.out, seed=config.seed, use_cpu=not cuda, bf16=cuda and setup.dtype == torch.bfloat16,
        per_device_train_batch_size=config.forward_batch(), per_device_eval_batch_size=config.forward_batch(),
        gradient_accumulation_steps=config.batch_size * config.grad_accum // config.forward_batch(),
        max_steps=plan.optimizer_steps, learning_rate=config.lr, lr_scheduler_type=config.lr_schedule,
        warmup_steps=plan.warmup_steps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        # A NaN check per step would be a host sync per step; TrainingError catches it at the log line.
        logging_strategy="steps", logging_steps=config.log_every, logging_nan_inf_filter=False,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        eval_strategy="steps" if config.eval_steps else "no", eval_steps=config.eval_steps,
        report_to=[] if config.report_to == "none" else [config.report_to],
        torch_compile=config.torch_compile, use_liger_kernel=config.liger,
        # Pinned, non-blocking copies: a blocking copy would wait for the previous step's kernels (a sync per step).
        dataloader_pin_memory=cuda, accelerator_config={"non_blocking": cuda},
        remove_unused_columns=False, disable_tqdm=True,
        ddp_find_unused_parameters=False,  # every LoRA weight is used in every step
    )


def _say(setup: Setup, lines: list[str]) -> None:
    if setup.main:
        for line in lines:
            tqdm.write(line)


def _evaluated_at(log_history: list[dict[str, Any]], step: int) -> bool:
    return any("eval_loss" in entry and entry["step"] == step for entry in log_history)


def _summary(plan: Plan, state: Any, elapsed: float, device: torch.device, bad_lines: int, mix: dict[str, Any],
             timer: StepTimer, resumed: Path | None) -> dict[str, Any]:
    history = [{"step": e["step"], "epoch": epoch_number(e["epoch"]), "loss": e["loss"],
                "token_accuracy": e["token_accuracy"], "lr": e["learning_rate"]}
               for e in state.log_history if "token_accuracy" in e]
    validation = [{"step": e["step"], "loss": e["eval_loss"], "token_accuracy": e["eval_token_accuracy"]}
                  for e in state.log_history if "eval_loss" in e]
    if not history:
        raise TrainingError("no optimizer step ran; the data set is empty for this batch size")
    seconds_per_step, timed = timer.seconds_per_step()
    return {
        "time_s": round(elapsed, 2),
        "first_loss": history[0]["loss"],
        "final_loss": history[-1]["loss"],
        "mean_token_accuracy": history[-1]["token_accuracy"],
        "val_loss": validation[-1]["loss"] if validation else None,
        "val_token_accuracy": validation[-1]["token_accuracy"] if validation else None,
        "trainable_parameters": plan.trainable_parameters,
        "total_parameters": plan.total_parameters,
        "examples": plan.examples,
        "bad_lines": bad_lines,
        "label_mix": mix,
        "optimizer_steps": plan.optimizer_steps,
        "seconds_per_step": seconds_per_step,  # mean after the first TIMING_WARMUP steps of this process's run
        "timed_steps": timed,
        "resumed_from": str(resumed) if resumed else None,
        "device": str(device),
        "world_size": plan.world_size,
        "contract_version": CONTRACT_VERSION,
        "history": history,
        "validation": validation,
    }


def save_adapter(model: Any, out: Path, config: TrainConfig, plan: Plan, summary: dict[str, Any],
                 setup: Setup) -> None:
    """peft's adapter files plus what the worker checks and what a reader needs to reproduce the run."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    write_adapter_contract(out)
    resolved = {**config.to_dict(), "contract_version": CONTRACT_VERSION, "device": str(setup.device),
                "dtype": str(setup.dtype).removeprefix("torch."), "plan": plan.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(resolved, indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
