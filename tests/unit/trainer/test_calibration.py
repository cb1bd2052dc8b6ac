"""Calibration: the ECE, and temperatures that bring a deliberately over-confident model's ECE down."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from trainer.calibration import (
    calibrate,
    confidence,
    expected_calibration_error,
    reliability,
    write_calibration,
)
from trainer.data import Example
from worker.contract import FOLDERS, PRIORITIES, PRIORITY_LABELS, ClassificationResult, Confidence, Notification
from worker.model.adapters import read_calibration
from worker.model.answer_trie import Branch


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    return [w / sum(weights) for w in weights]


def test_ece_of_a_calibrated_and_of_an_overconfident_predictor() -> None:
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([0.99] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.49)
    rows = reliability([0.0, 0.05, 0.1, 0.55, 1.0], [True, False, True, True, False])
    assert [r["n"] for r in rows] == [3, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # (0, 0.1] holds 0 and 0.1; 1.0 the last


def overconfident_set(n: int, sharpen: float, seed: int = 0) -> tuple[list[list[Branch]], list[Example],
                                                                         list[ClassificationResult]]:
    """Labels drawn from softmax(z); the 'model' reports softmax(sharpen * z): right argmax, too sure."""
    rng = random.Random(seed)
    samples, examples, results = [], [], []
    for i in range(n):
        folder_z = [rng.gauss(0, 1) for _ in FOLDERS]
        priority_z = [rng.gauss(0, 1) for _ in PRIORITIES]
        truth_f = rng.choices(range(len(FOLDERS)), softmax(folder_z))[0]
        truth_p = rng.choices(range(len(PRIORITIES)), softmax(priority_z))[0]
        pick_f, pick_p = folder_z.index(max(folder_z)), priority_z.index(max(priority_z))
        samples.append([("folder", [sharpen * z for z in folder_z], pick_f),
                        ("priority", [sharpen * z for z in priority_z], pick_p)])
        examples.append(Example(Notification(title=f"m{i}"), FOLDERS[truth_f], PRIORITIES[truth_p]))
        results.append(ClassificationResult(
            id=None, folder=FOLDERS[pick_f], priority=PRIORITIES[pick_p],
            priority_label=PRIORITY_LABELS[PRIORITIES[pick_p]], confidence=Confidence(folder=0.9, priority=0.9),
            decoding="constrained", truncated=False, model="m"))
    return samples, examples, results


def test_temperature_brings_an_overconfident_models_ece_down(tmp_path: Path) -> None:
    samples, examples, results = overconfident_set(1500, sharpen=5.0)
    calibration = calibrate(samples, examples, results)
    for decision in ("folder", "priority"):
        before, after = calibration["ece_before"][decision], calibration["ece_after"][decision]
        assert before > 0.15 and after < before / 3, (decision, before, after)
        assert 3.5 < calibration["temperature"][decision] < 7.0  # the sharpening it undoes is 5
    # answers do not move: at the fitted temperature each branch's argmax is the one taken
    for branches in samples:
        for decision, logits, taken in branches:
            t = calibration["temperature"][decision]
            scaled = [v / t for v in logits]
            assert scaled.index(max(scaled)) == taken
    written = write_calibration(tmp_path, {**calibration}, "test.jsonl")
    assert read_calibration(str(tmp_path)) == calibration["temperature"]
    assert json.loads(written.read_text())["ece_after"] == calibration["ece_after"]


def test_a_product_of_branches_is_one_decisions_confidence() -> None:
    branches: list[Branch] = [("folder", [2.0, 1.0], 0), ("folder", [0.0, 3.0], 1), ("priority", [1.0, 1.0, 1.0], 2)]
    assert confidence(branches, "folder") == pytest.approx(softmax([2.0, 1.0])[0] * softmax([0.0, 3.0])[1])
    assert confidence(branches, "priority", 4.0) == pytest.approx(1 / 3)
    assert confidence(branches, "folder", 1e6) == pytest.approx(0.25, rel=1e-4)
