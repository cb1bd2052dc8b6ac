"""Evaluation: classify a labelled file with the worker's own Classifier and write the results and report.

The model, adapter, quantization and decoding come from the worker's Settings, so the numbers are
those of the service: the same prompt rendering, truncation, batching and decoding code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from trainer import TrainerError
from trainer.calibration import calibrate, write_calibration
from trainer.data import Example, read_dataset
from trainer.metrics import compute_metrics
from trainer.report import write_report
from worker.contract import CONTRACT_VERSION, ClassificationResult, Notification
from worker.model.classifier import Classifier, InferenceError
from worker.model.loading import ModelLoadError
from worker.settings import Settings

T = TypeVar("T")

RESULTS_FILE = "results.json"
CHUNK = 256  # notifications handed to the classifier per call (it batches inside)


class EvaluationError(TrainerError):
    """The model could not be loaded or failed on the data, or a comparison file is unreadable."""


def in_chunks(examples: Sequence[Example], call: Callable[[list[Notification]], Sequence[T]], *, desc: str,
              progress: bool) -> list[T]:
    """``call`` on the examples' notifications CHUNK at a time, with a progress bar; a model failure names the span."""
    out: list[T] = []
    with tqdm(total=len(examples), desc=desc, disable=not progress) as bar:
        for start in range(0, len(examples), CHUNK):
            chunk = examples[start:start + CHUNK]
            try:
                out.extend(call([e.notification for e in chunk]))
            except InferenceError as exc:
                raise EvaluationError(f"the model failed on examples {start}-{start + len(chunk)}: {exc}") from exc
            bar.update(len(chunk))
    return out


def classify_all(classifier: Classifier, examples: Sequence[Example], *, progress: bool) -> list[ClassificationResult]:
    return in_chunks(examples, classifier.classify, desc="evaluating", progress=progress)


def load_previous(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        previous: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read the previous results {path}: {exc}") from exc
    if "accuracy" not in previous:
        raise EvaluationError(f"{path} is not a notif-train results.json")
    return previous


def calibrate_adapter(classifier: Classifier, settings: Settings, examples: Sequence[Example],
                      results: Sequence[ClassificationResult], data: Path, *, progress: bool) -> dict[str, Any]:
    """Fit the temperatures on these examples, write calibration.json into the adapter, return the evidence."""
    samples = in_chunks(examples, classifier.branches, desc="calibrating", progress=progress)
    calibration = calibrate(samples, examples, results)
    assert settings.adapter is not None
    calibration["file"] = str(write_calibration(Path(settings.adapter), calibration, str(data)))
    return calibration


def evaluate(settings: Settings, data: Path, out: Path, *, limit: int | None = None,
             compare: Path | None = None, progress: bool = True, calibrate: bool = False) -> dict[str, Any]:
    """Classify ``data`` (first ``limit`` examples), write results.json, report.md and the PNGs to ``out``.

    ``calibrate``: also fit one temperature per decision and write calibration.json into the adapter.
    """
    if calibrate and not (settings.adapter and Path(settings.adapter).is_dir()):
        raise EvaluationError("--calibrate writes calibration.json into the adapter: give --adapter as a local "
                              "directory")
    previous = load_previous(compare)
    dataset = read_dataset(data, limit=limit)
    try:
        classifier = Classifier.from_settings(settings)
    except ModelLoadError as exc:
        raise EvaluationError(str(exc)) from exc
    started = time.perf_counter()
    results = classify_all(classifier, dataset.examples, progress=progress)
    elapsed = time.perf_counter() - started
    report: dict[str, Any] = {
        "model": classifier.name,
        "base_model": settings.model,
        "adapter": settings.adapter,
        "quantization": classifier.runtime.get("quantization", settings.quantization),  # auto resolved
        "decoding": settings.decoding,
        "device": str(classifier.device),
        "data": str(data),
        "bad_lines": len(dataset.problems),
        "contract_version": CONTRACT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 2),
        "notifications_per_s": round(len(results) / elapsed, 2) if elapsed > 0 else None,
        **compute_metrics(dataset.examples, results),
    }
    if calibrate:
        report["calibration"] = calibrate_adapter(classifier, settings, dataset.examples, results, data,
                                                  progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    write_report(report, out, previous)
    return report
