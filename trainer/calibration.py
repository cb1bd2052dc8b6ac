"""Confidence calibration: one temperature per decision, fitted on labelled data, and the ECE before and after.

The worker publishes, per decision, the restricted-softmax probability of the branch it took (a folder
may take two branches, e.g. ``P`` then ``romotions``: the probabilities multiply). A temperature T
divides those logits before the softmax; the argmax is the same at any T, so answers never change.
T is fitted by minimising the log loss of the published confidence against whether the answer was
right (a grid over log T, then a golden-section refinement), which is what "80% confident" should mean.
The expected calibration error (ECE) uses 10 equal-width confidence bins, weighted by their counts.
The fitted temperatures go to ``calibration.json`` in the adapter directory (worker/model/adapters.py
reads it), beside the ECE they achieved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainer.data import Example
from worker.contract import ClassificationResult
from worker.model.adapters import CALIBRATION_FILE, DECISIONS
from worker.model.answer_trie import Branch

BINS = 10
T_RANGE = (0.05, 100.0)  # past these a temperature says the model knows nothing, or everything
GRID = 80
EPSILON = 1e-6


def confidence(branches: Sequence[Branch], decision: str, temperature: float = 1.0) -> float:
    """The published confidence of ``decision`` at ``temperature``: the product over its branches."""
    value = 1.0
    for name, logits, taken in branches:
        if name != decision:
            continue
        scaled = [v / temperature for v in logits]
        top = max(scaled)
        weights = [math.exp(v - top) for v in scaled]
        value *= weights[taken] / sum(weights)
    return value


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> float:
    """Sum over equal-width bins of (share of items) x |accuracy - mean confidence|."""
    return sum(row["n"] * abs(row["accuracy"] - row["confidence"]) for row in reliability(
        confidences, correct, bins) if row["n"]) / max(1, len(confidences))


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> list[dict[str, Any]]:
    """Per bin ((i/bins, (i+1)/bins], the first closed): count, accuracy and mean confidence."""
    rows: list[dict[str, Any]] = [{"low": i / bins, "high": (i + 1) / bins, "n": 0, "hits": 0, "sum": 0.0}
                                  for i in range(bins)]
    for value, hit in zip(confidences, correct, strict=True):
        row = rows[min(bins - 1, max(0, math.ceil(value * bins) - 1))]
        row["n"] += 1
        row["hits"] += int(hit)
        row["sum"] += value
    return [{"low": r["low"], "high": r["high"], "n": r["n"],
             "accuracy": r["hits"] / r["n"] if r["n"] else 0.0,
             "confidence": r["sum"] / r["n"] if r["n"] else 0.0} for r in rows]


def log_loss(samples: Sequence[Sequence[Branch]], correct: Sequence[bool], decision: str, temperature: float) -> float:
    total = 0.0
    for branches, hit in zip(samples, correct, strict=True):
        value = min(1 - EPSILON, max(EPSILON, confidence(branches, decision, temperature)))
        total -= math.log(value if hit else 1 - value)
    return total / max(1, len(samples))


def fit_temperature(samples: Sequence[Sequence[Branch]], correct: Sequence[bool], decision: str) -> float:
    """The temperature minimising the log loss of ``decision``'s confidence against correctness."""
    low, high = (math.log(t) for t in T_RANGE)
    grid = [low + (high - low) * i / (GRID - 1) for i in range(GRID)]
    losses = [log_loss(samples, correct, decision, math.exp(x)) for x in grid]
    best = min(range(GRID), key=losses.__getitem__)
    a, b = grid[max(0, best - 1)], grid[min(GRID - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):  # golden section inside the bracket around the best grid point
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if log_loss(samples, correct, decision, math.exp(c)) < log_loss(samples, correct, decision, math.exp(d)):
            b = d
        else:
            a = c
    return round(math.exp((a + b) / 2), 4)


def calibrate(samples: Sequence[Sequence[Branch]], examples: Sequence[Example],
              results: Sequence[ClassificationResult]) -> dict[str, Any]:
    """Fit both temperatures; the ECE and reliability bins of each decision before (T=1) and after."""
    if not len(samples) == len(examples) == len(results) or not samples:
        raise ValueError(f"need branches, an example and a result for each item: {len(samples)}, "
                         f"{len(examples)}, {len(results)}")
    hits = {"folder": [e.folder == r.folder for e, r in zip(examples, results, strict=True)],
            "priority": [e.priority == r.priority for e, r in zip(examples, results, strict=True)]}
    out: dict[str, Any] = {"bins": BINS, "n": len(samples), "temperature": {}, "ece_before": {}, "ece_after": {},
                           "reliability_before": {}, "reliability_after": {}}
    for decision in DECISIONS:
        correct = hits[decision]
        temperature = fit_temperature(samples, correct, decision)
        out["temperature"][decision] = temperature
        for when, t in (("before", 1.0), ("after", temperature)):
            confidences = [confidence(branches, decision, t) for branches in samples]
            out[f"ece_{when}"][decision] = round(expected_calibration_error(confidences, correct), 4)
            out[f"reliability_{when}"][decision] = reliability(confidences, correct)
    return out


def write_calibration(adapter: Path, calibration: dict[str, Any], data: str) -> Path:
    """calibration.json in the adapter directory: the temperatures the worker applies, and their evidence."""
    path = adapter / CALIBRATION_FILE
    path.write_text(json.dumps({
        "temperature": calibration["temperature"], "ece_before": calibration["ece_before"],
        "ece_after": calibration["ece_after"], "bins": calibration["bins"], "n": calibration["n"], "data": data,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=2) + "\n")
    return path


def plot_reliability(calibration: dict[str, Any], path: Path) -> None:
    """Reliability diagrams (accuracy against confidence per bin), before and after, one panel per decision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DECISIONS), figsize=(5 * len(DECISIONS), 4.6))
    for ax, decision in zip(axes, DECISIONS, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        for when, color in (("before", "tab:red"), ("after", "tab:blue")):
            rows = [r for r in calibration[f"reliability_{when}"][decision] if r["n"]]
            ece = calibration[f"ece_{when}"][decision]
            label = f"{when}: ECE {ece:.3f}" + (f" (T={calibration['temperature'][decision]:g})"
                                                if when == "after" else "")
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color=color,
                    label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (bin mean)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{decision} (n={calibration['n']}, {calibration['bins']} bins)")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
