"""Evaluation metrics from gold labels and the classifier's results (pure: no model, no files).

Per-class "accuracy" is recall: the share of the notifications whose true class is that class that
got it right (how the reference reported medium priority at 66.4%). A result whose decoding is
"generate_fallback" is a parse failure of free generation; it is counted, and its answer (re-scored
by the constrained path, as the worker publishes it) is scored like any other.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from trainer.data import Example
from worker.contract import FOLDERS, PRIORITIES, PRIORITY_LABELS, ClassificationResult


def confusion(truth: Sequence[Hashable], predicted: Sequence[Hashable], labels: Sequence[Hashable]) -> list[list[int]]:
    """matrix[i][j] = how many with true label i were predicted as label j."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t]][index[p]] += 1
    return matrix


def per_class(matrix: list[list[int]], labels: Sequence[Hashable]) -> dict[str, dict[str, float | int]]:
    """n, accuracy (recall), precision and F1 of each class."""
    rows = {}
    for i, label in enumerate(labels):
        n = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        hit = matrix[i][i]
        recall = hit / n if n else 0.0
        precision = hit / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows[str(label)] = {"n": n, "accuracy": round(recall, 4), "precision": round(precision, 4),
                            "f1": round(f1, 4)}
    return rows


def macro_f1(classes: dict[str, dict[str, float | int]]) -> float:
    """Mean F1 over the classes present in the gold labels."""
    present = [row["f1"] for row in classes.values() if row["n"]]
    return round(sum(present) / len(present), 4) if present else 0.0


def compute_metrics(golds: Sequence[Example], results: Sequence[ClassificationResult]) -> dict[str, Any]:
    """Every number of the report: overall, per class, macro-F1, confusion matrices, parse failures."""
    if len(golds) != len(results) or not golds:
        raise ValueError(f"need one result per example, got {len(results)} for {len(golds)}")
    n = len(golds)
    folder_ok = [g.folder == r.folder for g, r in zip(golds, results, strict=True)]
    priority_ok = [g.priority == r.priority for g, r in zip(golds, results, strict=True)]
    failures = sum(r.decoding == "generate_fallback" for r in results)
    folder_matrix = confusion([g.folder for g in golds], [r.folder for r in results], FOLDERS)
    priority_matrix = confusion([g.priority for g in golds], [r.priority for r in results], PRIORITIES)
    per_folder = per_class(folder_matrix, FOLDERS)
    per_priority = per_class(priority_matrix, PRIORITIES)
    for key, row in per_priority.items():
        row["label"] = PRIORITY_LABELS[int(key)]  # type: ignore[assignment]
    return {
        "n": n,
        "accuracy": {
            "folder": round(sum(folder_ok) / n, 4),
            "priority": round(sum(priority_ok) / n, 4),
            "both": round(sum(f and p for f, p in zip(folder_ok, priority_ok, strict=True)) / n, 4),
        },
        "parse_failures": {"count": failures, "rate": round(failures / n, 4)},
        "macro_f1": {"folder": macro_f1(per_folder), "priority": macro_f1(per_priority)},
        "per_folder": per_folder,
        "per_priority": per_priority,
        "confusion": {
            "folder": {"labels": list(FOLDERS), "matrix": folder_matrix},
            "priority": {"labels": [str(p) for p in PRIORITIES], "matrix": priority_matrix},
        },
        "truncated": sum(r.truncated for r in results),
    }


def majority_baseline(train: Sequence[Example], test: Sequence[Example]) -> dict[str, float]:
    """Accuracy on ``test`` of always answering the most common training folder and priority."""
    folders = [e.folder for e in train]
    priorities = [e.priority for e in train]
    folder = max(FOLDERS, key=folders.count)
    priority = max(PRIORITIES, key=priorities.count)
    n = len(test)
    return {
        "folder": round(sum(e.folder == folder for e in test) / n, 4),
        "priority": round(sum(e.priority == priority for e in test) / n, 4),
        "both": round(sum(e.folder == folder and e.priority == priority for e in test) / n, 4),
    }
