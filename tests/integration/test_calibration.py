"""`notif-train eval --calibrate` on a deliberately over-confident model: ECE drops, answers stay, serving uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.adapters import make_adapter
from trainer.calibration import expected_calibration_error
from trainer.cli import main
from trainer.data import read_dataset
from trainer.synth import write_split
from worker.contract import contract_fingerprint
from worker.model.classifier import Classifier
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SHARPEN = 8.0  # every logit times 8: the same answers, confidences near 1 at chance accuracy


def overconfident_model(tiny_model_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        model.model.norm.weight.mul_(SHARPEN)  # the final norm feeds the head: all logits scale alike
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


def test_calibration_lowers_the_ece_and_keeps_the_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = overconfident_model(tiny_model_dir, tmp_path / "sharp")
    adapter = make_adapter(str(model), tmp_path / "adapter", contract=contract_fingerprint(), seed=3)
    write_split(tmp_path / "data", n=300, seed=4, train_size=100)
    data = tmp_path / "data" / "test.jsonl"
    common = ["eval", "--model", str(model), "--adapter", str(adapter), "--quantization", "none", "--device", "cpu",
              "--data", str(data), "--no-progress"]
    assert main([*common, "--calibrate", "--out", str(tmp_path / "before")]) == 0
    results = json.loads((tmp_path / "before" / "results.json").read_text())
    calibration = results["calibration"]
    for decision in ("folder", "priority"):
        assert calibration["ece_after"][decision] < calibration["ece_before"][decision] / 2, calibration
        assert calibration["temperature"][decision] > 1  # over-confident: the temperature softens
    assert json.loads((adapter / "calibration.json").read_text())["temperature"] == calibration["temperature"]
    assert (tmp_path / "before" / "reliability.png").stat().st_size > 10_000
    report = (tmp_path / "before" / "report.md").read_text()
    assert "## Calibration" in report and "![reliability diagram](reliability.png)" in report

    # The worker now applies it: the same answers, confidences whose ECE is the one eval reported.
    assert main([*common, "--out", str(tmp_path / "after")]) == 0
    after = json.loads((tmp_path / "after" / "results.json").read_text())
    assert after["confusion"] == results["confusion"]
    classifier = Classifier.from_settings(Settings(model=str(model), adapter=str(adapter), quantization="none",
                                                   device="cpu"))
    examples = read_dataset(data).examples
    published = classifier.classify([e.notification for e in examples])
    for decision in ("folder", "priority"):
        hits = [getattr(e, decision) == getattr(r, decision) for e, r in zip(examples, published, strict=True)]
        confidences = [getattr(r.confidence, decision) for r in published]
        assert expected_calibration_error(confidences, hits) == pytest.approx(
            calibration["ece_after"][decision], abs=1e-3)
