"""--dry-run on Qwen3-0.6B's config: the reference's 10,092,544 trainable parameters and 2,250 steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main
from trainer.config import ALL_PROJECTIONS, ConfigError, TrainConfig, optimizer_steps
from trainer.synth import write_split
from worker.dev.models import QWEN3_0_6B


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with Qwen3-0.6B's config.json only: no weights, no tokenizer."""
    from transformers import Qwen3Config

    path = tmp_path_factory.mktemp("qwen3-0.6b-config")
    Qwen3Config(**QWEN3_0_6B).save_pretrained(str(path))
    return path


def test_dry_run_prints_the_reference_plan(config_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_split(tmp_path, n=16_001, seed=0)
    assert main(["train", "--dry-run", "--model", str(config_dir), "--data", str(tmp_path / "train.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters  10,092,544" in out
    assert "examples              12,000" in out
    assert "optimizer steps       2,250 (warm-up 225)" in out
    assert "total parameters      606,142,464" in out  # 596,049,920 base (tied embeddings) + LoRA


def test_defaults_are_the_reference_recipe() -> None:
    config = TrainConfig()
    assert (config.quantization, config.lora_r, config.lora_alpha, config.target_modules) == (
        "nf4", 16, 16, ALL_PROJECTIONS)
    assert (config.epochs, config.batch_size, config.grad_accum, config.lr) == (3, 4, 4, 2e-4)
    assert (config.lr_schedule, config.warmup_ratio) == ("cosine", 0.1)
    assert config.model == "Qwen/Qwen3-0.6B"


def test_steps_per_world_size_and_cap() -> None:
    config = TrainConfig()
    assert optimizer_steps(12_000, config) == 2_250
    assert optimizer_steps(12_000, config, world_size=2) == 1_125
    assert optimizer_steps(12_001, config) == 2_253
    assert optimizer_steps(12_000, TrainConfig(max_steps=10)) == 10


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(warmup_ratio=1.5).check()
    with pytest.raises(ConfigError):
        TrainConfig(target_modules=" , ").check()
    with pytest.raises(SystemExit):
        main(["train", "--quantization", "int8"])
    with pytest.raises(ConfigError, match="does not divide"):
        TrainConfig(micro_batch=3).check()  # 4 x 4 = 16 examples per step
    with pytest.raises(ConfigError, match="needs val_data"):
        TrainConfig(eval_steps=5).check()
    with pytest.raises(ConfigError, match="needs quantization nf4"):
        TrainConfig(quantization="none", dequantize_base=True).check()


def test_trainer_flags_reach_the_config() -> None:
    from trainer.cli import build_parser
    from trainer.config import config_from_args

    args = build_parser().parse_args(["train", "--save-steps", "50", "--resume", "--val-data", "v.jsonl",
                                      "--eval-steps", "25", "--report-to", "tensorboard", "--micro-batch", "8"])
    config = config_from_args(args)
    assert (config.save_steps, config.resume, config.val_data, config.eval_steps, config.report_to) == (
        50, True, "v.jsonl", 25, "tensorboard")
    assert (config.forward_batch(), TrainConfig().forward_batch()) == (8, 16)  # default: one pass per step
    assert (config.lora_dtype, config.dequantize_base, config.torch_compile, config.liger) == (
        "auto", False, False, False)


def test_unknown_model_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dry-run", "--model", str(tmp_path / "nope"), "--data", "x.jsonl"]) == 2
    assert "cannot read the config" in capsys.readouterr().err
