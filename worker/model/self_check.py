"""The fast engine proves itself on the device it runs on: a fixed probe batch scored by it and by the reference.

The fast engine (dequantized NF4 weights, packed passes, CUDA graphs) is a second implementation of what the
transformers model computes; a new GPU, driver or torch build is the first place it runs. Before serving, the
probe (a few dozen notifications of mixed lengths, one of them cut by NOTIF_MAX_INPUT_TOKENS) is scored by
both. Any answer that differs, or a confidence apart by more than the tolerance, fails the check:

- float32 (the CPU): 1e-4. The two agree within 1e-5 there (tests/integration/test_engine.py).
- bfloat16 / float16 / NF4 (a GPU): 3e-2. A 16-bit mantissa keeps about 3 significant digits, and the two
  sum in different orders (packed rows, fused attention); a wrong kernel or weight moves answers and
  confidences by far more (tests/integration/test_self_check.py perturbs a weight to show it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from worker.contract import ClassificationResult, Notification

PROBE_SIZE = 32
TOLERANCE = {torch.float32: 1e-4}
DEFAULT_TOLERANCE = 3e-2
log = logging.getLogger("worker.model.classifier")  # the classifier's log: where its engine is chosen
_LONG_BODY = "The quarterly infrastructure review covers every service we run. " * 120  # far past 384 tokens


class EngineSelfCheckFailed(RuntimeError):
    """The fast engine's answers differ from the reference's on this device (NOTIF_ENGINE=fast makes it fatal)."""


@dataclass(frozen=True)
class SelfCheck:
    """What the check found: whether it passed, its time, which probe items differ and the largest gap."""

    passed: bool
    seconds: float
    items: int
    tolerance: float
    max_gap: float
    differing: list[int] = field(default_factory=list)

    def describe(self) -> str:
        verdict = "passed" if self.passed else f"failed: answers differ on items {self.differing[:10]}"
        return (f"fast engine self-check {verdict}; largest confidence gap {self.max_gap:.2e} "
                f"(tolerance {self.tolerance:g}) over {self.items} notifications in {self.seconds:.2f}s")


def probe_notifications() -> list[Notification]:
    """The fixed probe: seeded synthetic notifications of mixed lengths, and one cut by the token budget."""
    from worker.synth.sampler import iter_raw_notifications

    stream = iter_raw_notifications(seed=4242)
    probe = [Notification.model_validate(next(stream)) for _ in range(PROBE_SIZE - 2)]
    probe.append(Notification(id="probe-short", title="ok"))
    probe.append(Notification(id="probe-long", app="Confluence", title="Quarterly review", body=_LONG_BODY))
    return probe


def compare(fast: Sequence[ClassificationResult], reference: Sequence[ClassificationResult],
            tolerance: float, seconds: float) -> SelfCheck:
    """The verdict of two scorings of the same probe (pure)."""
    differing, max_gap = [], 0.0
    for index, (mine, theirs) in enumerate(zip(fast, reference, strict=True)):
        if (mine.folder, mine.priority, mine.truncated) != (theirs.folder, theirs.priority, theirs.truncated):
            differing.append(index)
        for name in ("folder", "priority"):
            a, b = getattr(mine.confidence, name), getattr(theirs.confidence, name)
            if a is not None and b is not None:
                max_gap = max(max_gap, abs(a - b))
            elif a != b:
                differing.append(index)
    return SelfCheck(not differing and max_gap <= tolerance, seconds, len(fast), tolerance, max_gap,
                     sorted(set(differing)))


def run_self_check(classifier: Any, dtype: torch.dtype) -> SelfCheck:
    """Score the probe with the classifier's fast engine, then with the reference (the engine set aside)."""
    probe = probe_notifications()
    started = time.perf_counter()
    fast = classifier.classify(probe)
    engine, classifier.engine = classifier.engine, None
    try:
        reference = classifier.classify(probe)
    finally:
        classifier.engine = engine
    return compare(fast, reference, TOLERANCE.get(dtype, DEFAULT_TOLERANCE), time.perf_counter() - started)


def check_engine(classifier: Any) -> dict[str, str]:
    """The fast engine proves itself on this device, or the reference serves (NOTIF_ENGINE=fast: or nothing).

    Returns notif_engine_info's labels: which engine scores, and why.
    """
    settings = classifier.settings
    if classifier.serving.engine is None:
        auto_cpu = settings.engine == "auto" and classifier.device.type != "cuda"
        reason = ("configured" if settings.engine == "reference"
                  else "cpu_default" if auto_cpu else "unsupported_model")
        return {"engine": "reference", "reason": reason}
    check = run_self_check(classifier, classifier._dtype)
    if check.passed:
        log.info(check.describe())
        return {"engine": "fast", "reason": "self_check_passed"}
    if settings.engine == "fast":
        raise EngineSelfCheckFailed(check.describe() + "; NOTIF_ENGINE=fast makes this fatal")
    log.error("%s; the reference engine serves instead", check.describe())
    classifier.serving.engine = None
    return {"engine": "reference", "reason": "self_check_failed"}
