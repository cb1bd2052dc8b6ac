"""trainer.metrics and trainer.report: numbers, tables and plots from known predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import Example
from trainer.metrics import compute_metrics, confusion, macro_f1, majority_baseline, per_class
from trainer.report import write_report
from worker.contract import PRIORITY_LABELS, ClassificationResult, Confidence, Notification

GOLD = [("Work", 1), ("Work", 2), ("Personal", 2), ("Alerts", 3), ("Promotions", 1)]
PREDICTED = [("Work", 1), ("Work", 1), ("Work", 2), ("Alerts", 3), ("Promotions", 1)]


def result(folder: str, priority: int, decoding: str = "constrained") -> ClassificationResult:
    return ClassificationResult(id=None, folder=folder, priority=priority, priority_label=PRIORITY_LABELS[priority],
                                confidence=Confidence(folder=0.9, priority=0.8), decoding=decoding,  # type: ignore[arg-type]
                                truncated=False, model="m")


@pytest.fixture
def metrics() -> dict:
    golds = [Example(Notification(title="t"), f, p) for f, p in GOLD]
    results = [result(f, p) for f, p in PREDICTED[:-1]] + [result("Promotions", 1, "generate_fallback")]
    return compute_metrics(golds, results)


def test_metrics(metrics: dict) -> None:
    assert metrics["accuracy"] == {"folder": 0.8, "priority": 0.8, "both": 0.6}
    assert metrics["parse_failures"] == {"count": 1, "rate": 0.2}
    assert metrics["per_priority"]["2"] == {"n": 2, "accuracy": 0.5, "precision": 1.0, "f1": 0.6667, "label": "Medium"}
    assert metrics["per_folder"]["Work"]["accuracy"] == 1.0 and metrics["per_folder"]["Work"]["precision"] == 0.6667
    assert metrics["confusion"]["folder"]["matrix"][1] == [1, 0, 0, 0]  # the Personal one went to Work
    assert metrics["macro_f1"]["priority"] == round((0.8 + 0.6667 + 1.0) / 3, 4)


def test_confusion_and_f1_helpers() -> None:
    matrix = confusion(["a", "a", "b"], ["a", "b", "b"], ["a", "b", "c"])
    assert matrix == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    rows = per_class(matrix, ["a", "b", "c"])
    assert rows["c"]["n"] == 0 and macro_f1(rows) == round((2 / 3 + 2 / 3) / 2, 4)  # absent classes left out


def test_majority_baseline() -> None:
    train = [Example(Notification(title="t"), f, p) for f, p in [("Work", 1), ("Work", 1), ("Alerts", 3)]]
    test = [Example(Notification(title="t"), f, p) for f, p in GOLD]
    assert majority_baseline(train, test) == {"folder": 0.4, "priority": 0.4, "both": 0.2}


def test_report_with_comparison(metrics: dict, tmp_path: Path) -> None:
    results = {"model": "m+a", "base_model": "m", "adapter": "a", "quantization": "nf4", "decoding": "generate",
               "device": "cpu", "data": "test.jsonl", "bad_lines": 0, "contract_version": "1.0",
               "created": "2025-01-01T00:00:00+00:00", "notifications_per_s": 3.0, **metrics}
    previous = json.loads(json.dumps(results))
    previous["accuracy"]["folder"] = 0.5
    path = write_report(results, tmp_path, previous)
    text = path.read_text()
    assert "| Folder accuracy | **80.0%** | 94.0% | 90.6% | 50.0% | +30.0 pp |" in text
    assert "| 2 Medium | 2 | **50.0%** | 66.4% |" in text
    assert "| Parse failures | 1 (20.0%) | 0 (0.0%) |" in text
    assert "| Personal | 1 | 0 | 0 | 0 |" in text
    assert (tmp_path / "confusion_folder.png").stat().st_size > 1000
    assert (tmp_path / "confusion_priority.png").is_file()
