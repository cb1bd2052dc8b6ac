"""transformers' Trainer with our loss: the shared-prefix pass, the answer-only weighted loss, token accuracy.

The Trainer brings the loop, gradient accumulation, clipping, fused AdamW, the schedule, checkpoints,
resume, TensorBoard and DDP under `accelerate launch`. What is ours: compute_loss (batch_loss below),
the loss normalised by the loss weight of the whole accumulation window (so micro-batches give the
arithmetic of one pass), training figures summed on the device and read only when a line is logged
(no host sync per step), a validation pass of our own metrics, and the step timer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from tqdm import tqdm
from transformers import Trainer, TrainerCallback

from trainer import TrainerError
from trainer.batches import IGNORE
from worker.model.loading import write_adapter_contract


class TrainingError(TrainerError):
    """Training could not start or could not finish (model not loadable, loss not finite)."""


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


def batch_loss(model: Any, inputs: dict[str, Any],
               prefix_model: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted loss sum, weight sum, correct predictions, trained tokens) of one forward pass, as tensors.

    ``inputs`` is a Batch's keyword dict on the model's device. The prefix runs once through
    ``prefix_model`` (the model itself, or the module inside DDP so that DDP sees one forward per
    backward). Rows are left-padded, so every trained token sits in the last columns, and the model
    computes logits at those K columns only (logits_to_keep as positions): a [B, S, 151936] tensor is
    never built, and the [B * K, V] block is contiguous, without a gather or a per-row count.
    """
    rows = inputs["input_ids"].shape[0]
    cache = prefix_cache(prefix_model or model, inputs["prefix"], rows)
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                position_ids=inputs["position_ids"], past_key_values=cache, use_cache=True,
                logits_to_keep=inputs["logit_positions"])
    logits = out.logits.flatten(0, 1).float()  # [B * K, V]
    targets, weights = inputs["targets"], inputs["target_weights"]  # [B * K]
    losses = F.cross_entropy(logits, targets, reduction="none", ignore_index=IGNORE)  # 0 where IGNORE
    trained = targets != IGNORE
    correct = ((logits.detach().argmax(-1) == targets) & trained).sum()
    return (losses * weights).sum(), weights.sum(), correct, trained.sum()


class NotifTrainer(Trainer):
    """Trainer whose loss is batch_loss, normalised by the accumulation window's total loss weight."""

    def __init__(self, *args: Any, sampler: Sampler[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler = sampler  # our epoch order (natural or balanced), not the Trainer's random one
        # compute_loss divides by the window's weight itself: no further division by the accumulation steps
        # (transformers >= 5.24 reads the first attribute; 5.17, the version on the GPU image, the second).
        self.loss_is_scaled_for_ga = True
        self.model_accepts_loss_kwargs = True
        self._sums: torch.Tensor | None = None  # [loss_sum, weight, correct, tokens] since the last log line

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int]:
        return self.sampler

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None:
        """The loss weight of this optimizer step's micro-batches (this process's), as a tensor: no sync."""
        return torch.stack([batch["target_weights"].sum() for batch in batch_samples]).sum().to(device)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        loss_sum, weight, correct, tokens = batch_loss(model, inputs, inner)
        sums = torch.stack([loss_sum.detach(), weight, correct.float(), tokens.float()])
        self._sums = sums if self._sums is None else self._sums + sums
        loss = loss_sum / (weight if num_items_in_batch is None else num_items_in_batch)
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training lines get our weighted loss and token accuracy (the one host read of the window)."""
        if "loss" in logs and self._sums is not None:
            loss_sum, weight, correct, tokens = self.accelerator.reduce(self._sums, reduction="sum").tolist()
            self._sums = None
            logs["loss"] = round(loss_sum / max(weight, 1e-9), 5)
            logs["token_accuracy"] = round(correct / max(tokens, 1.0), 5)
            if not math.isfinite(logs["loss"]):
                raise TrainingError("the loss is not finite; lower --lr or check the data")
        super().log(logs, start_time)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Validation loss (unweighted mean over the trained tokens) and token accuracy."""
        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(4, device=self.args.device)
        with torch.no_grad(), self.compute_loss_context_manager():
            for batch in loader:
                inputs = self._prepare_inputs(batch)
                inputs["target_weights"] = (inputs["targets"] != IGNORE).float()  # the plain token mean
                loss_sum, weight, correct, tokens = batch_loss(model, inputs)
                sums += torch.stack([loss_sum, weight, correct.float(), tokens.float()])
        model.train(was_training)
        loss_sum, weight, correct, tokens = self.accelerator.reduce(sums, reduction="sum").tolist()
        metrics = {f"{metric_key_prefix}_loss": round(loss_sum / max(weight, 1e-9), 5),
                   f"{metric_key_prefix}_token_accuracy": round(correct / max(tokens, 1.0), 5)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class ContractInCheckpoints(TrainerCallback):
    """Each checkpoint-N carries notif_contract.json like the final adapter (the same writer), so the worker's
    contract check can vouch for a mid-run checkpoint served as an adapter
    (`notif-worker classify --adapter OUT/checkpoint-N`)."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_adapter_contract(folder)
        return control


class LogLastStep(TrainerCallback):
    """Also log the last step, which --log-every may not divide (the summary's final loss is that line's)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class StepTimer(TrainerCallback):
    """Seconds per optimizer step after the first ``warmup`` steps of this process's run (compilation,
    allocator and kernel warm-up), validation and checkpoint time left out. The clock reads sync the device
    only after the warm-up, around each validation or checkpoint, and at the end: never once per step.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.first_step: int | None = None
        self.start: tuple[int, float] | None = None  # (global step, clock) when timing began
        self.end: tuple[int, float] | None = None
        self.paused_at: float | None = None
        self.paused = 0.0  # seconds spent validating and checkpointing inside the timed span

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.first_step is None:
            self.first_step = state.global_step - 1
        if self.start is None and state.global_step - self.first_step >= self.warmup:
            self.start = (state.global_step, self._now())
        elif self.start is not None and (control.should_evaluate or control.should_save):
            self.paused_at = self._now()  # DefaultFlowCallback, run before us, has decided this step's extras
        return control

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.paused_at is not None:
            self.paused += self._now() - self.paused_at
            self.paused_at = None
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.end = (state.global_step, self.paused_at or self._now())
        return control

    def seconds_per_step(self) -> tuple[float | None, int]:
        """(mean seconds per timed step, timed steps); (None, 0) when no step ran after the warm-up."""
        if self.start is None or self.end is None or self.end[0] <= self.start[0]:
            return None, 0
        steps = self.end[0] - self.start[0]
        return round((self.end[1] - self.start[1] - self.paused) / steps, 5), steps

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()


def epoch_number(epoch: float | None) -> int:
    """The Trainer's fractional epoch (0.5 = halfway through the first) as the 1-based epoch number."""
    return max(1, math.ceil((epoch or 0.0) - 1e-9))


class Progress(TrainerCallback):
    """A progress bar over optimizer steps and one printed line per log entry (instead of the raw dicts)."""

    def __init__(self, say: Callable[[str], None], bar: bool) -> None:
        self.say, self.show_bar = say, bar
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", disable=not self.show_bar)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> Any:
        logs = logs or {}
        if "token_accuracy" in logs:
            self.say(f"step {state.global_step:>6}  epoch {epoch_number(state.epoch)}  loss {logs['loss']:.4f}  "
                     f"token_acc {logs['token_accuracy']:.4f}  lr {logs.get('learning_rate', 0.0):.2e}")
        elif "eval_loss" in logs:
            self.say(f"step {state.global_step:>6}  validation loss {logs['eval_loss']:.4f}  "
                     f"token_acc {logs['eval_token_accuracy']:.4f}")
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.bar is not None:
            self.bar.close()
        return control
