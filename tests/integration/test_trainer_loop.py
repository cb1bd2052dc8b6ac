"""The Trainer path on the tiny Qwen3: its loss is a plain forward's, micro-batches are one pass's arithmetic,
a stopped run resumes its schedule from checkpoint-N, validation and TensorBoard land under --out, and the
dequantized NF4 base computes what the NF4 base computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.integration.adapters import classify_with_worker
from trainer import TrainerError
from trainer.batches import IGNORE, Encoder, collate, label_weights, token_weights
from trainer.config import TrainConfig
from trainer.data import read_dataset
from trainer.loop import batch_loss
from trainer.model import dequantize_linears
from trainer.synth import write_split
from trainer.train import train
from worker.contract import contract_fingerprint
from worker.model.loading import CONTRACT_FILE, load_base_model, load_tokenizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loop-data")
    write_split(root, n=40, seed=5, train_size=32)  # train.jsonl 32, test.jsonl 8
    return root


def recipe(model: Path, data: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A short deterministic run (no dropout) of the tiny model on the CPU: 32 examples, steps of 4."""
    base: dict[str, Any] = {"model": str(model), "data": str(data / "train.jsonl"), "out": str(out),
                            "quantization": "none", "device": "cpu", "epochs": 1, "batch_size": 2,
                            "grad_accum": 2, "lr": 5e-3, "lora_dropout": 0.0, "log_every": 1}
    return TrainConfig(**{**base, **overrides}).check()


def test_loss_is_a_plain_forwards_over_the_answer_tokens(tiny_model_dir: Path, data: Path) -> None:
    """Shared prefix + left padding + logits_to_keep + gathered targets == one sequence at a time, no cache."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    encoder = Encoder(tokenizer, 384)
    items = [encoder.encode(e) for e in read_dataset(data / "train.jsonl", limit=6).examples]
    weights = label_weights(items, "balanced")
    inputs = collate(items, encoder.prefix, tokenizer.pad_token_id, weights).inputs()
    with torch.no_grad():
        loss_sum, weight, correct, tokens = batch_loss(model, inputs)
        plain_sum, plain_weight, plain_correct, plain_tokens = 0.0, 0.0, 0, 0
        for item in items:
            ids = torch.tensor([[*encoder.prefix, *item.input_ids]])
            labels = torch.tensor([IGNORE] * len(encoder.prefix) + item.labels)[1:]
            logits = model(input_ids=ids).logits[0, :-1]  # position t predicts token t + 1
            trained = labels != IGNORE
            row_weights = torch.tensor(token_weights(item, weights))
            losses = F.cross_entropy(logits[trained], labels[trained], reduction="none")
            plain_sum += float((losses * row_weights).sum())
            plain_weight += float(row_weights.sum())
            plain_correct += int((logits[trained].argmax(-1) == labels[trained]).sum())
            plain_tokens += int(trained.sum())
    assert int(tokens) == plain_tokens == sum(len(item.trained) for item in items)
    assert int(correct) == plain_correct and float(weight) == pytest.approx(plain_weight)
    assert float(loss_sum) / float(weight) == pytest.approx(plain_sum / plain_weight, rel=1e-5)
    assert plain_weight != plain_tokens  # the weighting was on, so it was checked too


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter_model.safetensors"))


def test_micro_batches_give_the_one_pass_step(tiny_model_dir: Path, data: Path, tmp_path: Path) -> None:
    one = train(recipe(tiny_model_dir, data, tmp_path / "one", max_steps=2), progress=False)
    two = train(recipe(tiny_model_dir, data, tmp_path / "two", max_steps=2, micro_batch=2), progress=False)
    assert [h["loss"] for h in one["history"]] == pytest.approx([h["loss"] for h in two["history"]], rel=1e-4)
    first, second = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert first.keys() == second.keys()
    for name, value in first.items():
        torch.testing.assert_close(value, second[name], rtol=1e-4, atol=1e-6)
    assert any(float(v.abs().max()) > 0 for k, v in first.items() if "lora_B" in k)  # it did train


class StopAt(TrainerCallback):
    """Stops the run after a given optimizer step, as a preemption would (its checkpoint is on disk)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_a_stopped_run_resumes_its_schedule_with_validation_and_tensorboard(
        tiny_model_dir: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extras = {"save_steps": 3, "val_data": str(data / "test.jsonl"), "eval_steps": 4, "report_to": "tensorboard"}
    whole = train(recipe(tiny_model_dir, data, tmp_path / "whole", **extras), progress=False)
    assert whole["optimizer_steps"] == 8 and [h["step"] for h in whole["history"]] == list(range(1, 9))
    assert sorted(p.name for p in (tmp_path / "whole").glob("checkpoint-*")) == [
        "checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert [v["step"] for v in whole["validation"]] == [4, 8]
    saved = json.loads((tmp_path / "whole" / "training_summary.json").read_text())
    assert saved["val_loss"] == whole["validation"][-1]["loss"] > 0
    assert 0.0 <= saved["val_token_accuracy"] <= 1.0 and saved["seconds_per_step"] > 0
    assert list((tmp_path / "whole" / "runs").rglob("events.out.tfevents.*"))

    stopped = tmp_path / "stopped"
    train(recipe(tiny_model_dir, data, stopped, **extras), progress=False, callbacks=[StopAt(5)])
    assert sorted(p.name for p in stopped.glob("checkpoint-*")) == ["checkpoint-3"]
    # every adapter directory the trainer writes carries the contract: a mid-run checkpoint serves as an adapter
    for folder in [tmp_path / "whole", *(tmp_path / "whole").glob("checkpoint-*"), stopped / "checkpoint-3"]:
        assert json.loads((folder / CONTRACT_FILE).read_text()) == contract_fingerprint(), folder
    results = classify_with_worker(tiny_model_dir, stopped / "checkpoint-3", tmp_path)
    assert results and all(r["adapter_id"].startswith("checkpoint-3@") for r in results), results[:1]
    capsys.readouterr()
    resumed = train(recipe(tiny_model_dir, data, stopped, resume=True, **extras), progress=False)
    assert f"resuming from {stopped / 'checkpoint-3'} (optimizer step 3)" in capsys.readouterr().out
    assert resumed["resumed_from"] == str(stopped / "checkpoint-3")
    # The schedule goes on where the checkpoint left it: the same steps, learning rates and losses.
    assert [h["step"] for h in resumed["history"]] == list(range(1, 9))
    assert [h["lr"] for h in resumed["history"]] == pytest.approx([h["lr"] for h in whole["history"]], rel=1e-9)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in whole["history"]], rel=1e-4)
    assert [v["loss"] for v in resumed["validation"]] == pytest.approx(
        [v["loss"] for v in whole["validation"]], rel=1e-4)


def test_resume_without_a_checkpoint_and_a_missing_extra_are_clear_errors(tiny_model_dir: Path, data: Path,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="no checkpoint-N directory"):
        train(recipe(tiny_model_dir, data, tmp_path / "empty", resume=True), progress=False)
    with pytest.raises(TrainerError, match="pip install liger-kernel"):
        train(recipe(tiny_model_dir, data, tmp_path / "liger", liger=True), progress=False)  # not on a CPU box


def test_dequantized_base_computes_what_the_nf4_base_computes(tiny_model_dir: Path) -> None:
    """Each replaced linear gives its NF4 linear's output up to bf16 rounding (one unit in the last place)."""
    from worker.settings import Settings

    settings = Settings(model=str(tiny_model_dir), quantization="nf4", device="cpu")
    model = load_base_model(settings, torch.device("cpu"), torch.bfloat16).eval()
    quantized = {name: module for name, module in model.named_modules() if type(module).__name__ == "Linear4bit"}
    assert dequantize_linears(model, torch.bfloat16) == len(quantized) == 14  # 7 projections x 2 layers
    modules = dict(model.named_modules())
    torch.manual_seed(0)
    for name, nf4 in quantized.items():
        held = modules[name]
        assert type(held) is torch.nn.Linear and held.weight.dtype == torch.bfloat16
        assert not held.weight.requires_grad
        x = torch.randn(3, 5, nf4.in_features, dtype=torch.bfloat16)
        with torch.no_grad():
            expected, got = nf4(x).float(), held(x).float()
        scale = float(expected.abs().max())
        torch.testing.assert_close(got, expected, rtol=2**-7, atol=scale * 2**-7)
