"""Learnability: trained on a synthetic split, the tiny random Qwen3 clearly beats the majority class.

Measured numbers are in docs/TRAINING.md. The bar is deliberately modest: a 64-wide random model
with frozen random embeddings must learn, through LoRA alone, to read the notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import read_dataset
from trainer.metrics import compute_metrics, majority_baseline
from trainer.synth import write_split
from trainer.train import train
from worker.dev.models import QWEN3_TINY
from worker.model.classifier import Classifier
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN, TEST = 4800, 300  # 600 optimizer steps of 8 examples


def build_learner(out: Path, tokenizer_dir: Path) -> Path:
    """The tiny Qwen3 shape with the default init (std 0.02) and unit-variance embeddings.

    The shared tiny test model is initialised wide (std 0.3) to make the decoding tests hard; this one
    is the kind of random network the measured numbers come from.
    """
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_TINY))
    with torch.no_grad():
        embeddings: Any = model.get_input_embeddings()
        embeddings.weight.normal_(0.0, 1.0)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


@pytest.mark.timeout(1800)  # minutes on 2 idle cores; up to 10+ when other jobs share them
def test_tiny_model_beats_the_majority_class(tokenizer_dir: Path, tmp_path: Path) -> None:
    model = build_learner(tmp_path / "model", tokenizer_dir)
    write_split(tmp_path / "data", n=TRAIN + TEST, seed=7, train_size=TRAIN)
    config = TrainConfig(model=str(model), data=str(tmp_path / "data" / "train.jsonl"),
                         out=str(tmp_path / "adapter"), quantization="none", device="cpu", epochs=1,
                         batch_size=8, grad_accum=1, lr=5e-3, warmup_ratio=0.05, log_every=100)
    summary = train(config.check(), progress=False)

    train_set = read_dataset(tmp_path / "data" / "train.jsonl").examples
    test_set = read_dataset(tmp_path / "data" / "test.jsonl").examples
    settings = Settings(model=str(model), adapter=str(tmp_path / "adapter"), quantization="none",
                        device="cpu")
    results = Classifier.from_settings(settings).classify([e.notification for e in test_set])
    accuracy = compute_metrics(test_set, results)["accuracy"]
    baseline = majority_baseline(train_set, test_set)
    print(f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}; accuracy {accuracy}; "
          f"majority baseline {baseline}")
    # Measured: folder 51.7% vs 41.3%, priority 56.0% vs 51.0%, both 28.7% vs 16.7% (docs/TRAINING.md).
    assert accuracy["folder"] >= baseline["folder"] + 0.07
    assert accuracy["both"] >= baseline["both"] + 0.07
    assert accuracy["priority"] >= baseline["priority"]
