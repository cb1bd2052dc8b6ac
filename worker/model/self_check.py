"""The fast engine proves itself on the device it runs on: a fixed probe batch scored by it and by the reference.

The fast engine (dequantized NF4 weights, packed passes, CUDA graphs) is a second implementation of what the
transformers model computes; a new GPU, driver or torch build is the first place it runs. Before serving, the
probe (32 notifications from one word to a digest, one of them cut by NOTIF_MAX_INPUT_TOKENS) is scored by
both. An answer that differs, or a confidence apart by more than the tolerance, fails the check:

- float32 (the CPU): 1e-4. The two agree within 1e-5 there (tests/integration/test_engine.py).
- bfloat16 / float16 / NF4 (a GPU): 3e-2. bfloat16 keeps 8 significant bits (2 to 3 decimal digits), the
  fast engine merges the LoRA update into bf16 weights where the reference adds it beside them, and the two
  sum in different orders (packed rows, fused attention): confidences a few 1e-3 apart are expected. A wrong
  kernel, weight or rotary table moves them by tenths (tests/integration/test_self_check.py perturbs a weight
  to show it). The GPU figure is pending: scripts/gpu_check.sh prints the gap and the time.
- A near tie is no failure: where the two pick different answers for a decision and both are at most
  0.5 + tolerance sure, per-choice probabilities within the tolerance could pick either (two choices within
  2 x tolerance of each other). A later decision of that item follows another branch and is not compared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from worker.contract import ClassificationResult, Notification

PROBE_SIZE = 32
SHORT_PASS = 6  # the probe's first items scored as a pass of their own: on a GPU, a captured CUDA graph's route
TOLERANCE = {torch.float32: 1e-4}
DEFAULT_TOLERANCE = 3e-2
log = logging.getLogger("worker.model.classifier")  # the classifier's log: where its engine is chosen
_DIGEST = ("Weekly digest for the platform team: 14 pull requests merged, 3 waiting for review (auth service "
           "token refresh, billing export retries, the search index rebuild). The on-call handover is Thursday "
           "at 10:00; the runbook for the payment gateway was updated after last week's incident. ") * 3
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
    differing: list[str] = field(default_factory=list)  # the ids of the probe items whose answers differ
    near_ties: list[str] = field(default_factory=list)  # answers apart where either could win (not failures)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed" + (
            f": answers differ on {', '.join(self.differing[:10])}" if self.differing else "")
        ties = f", {len(self.near_ties)} near tie(s) allowed" if self.near_ties else ""
        return (f"fast engine self-check {verdict}; largest confidence gap {self.max_gap:.2e} "
                f"(tolerance {self.tolerance:g}) over {self.items} notifications{ties} in {self.seconds:.2f}s")

    def fields(self) -> dict[str, Any]:
        """The numbers, as the fields of the engine_self_check log event."""
        return {"passed": self.passed, "seconds": round(self.seconds, 3), "items": self.items,
                "differing": self.differing, "near_ties": self.near_ties, "max_gap": self.max_gap,
                "tolerance": self.tolerance, "summary": self.describe()}


def probe_notifications() -> list[Notification]:
    """The fixed probe: a one-word title, seeded synthetic notifications, a long digest, one cut by the budget."""
    from worker.synth.sampler import iter_raw_notifications

    stream = iter_raw_notifications(seed=4242)
    synthetic = [Notification.model_validate({**next(stream), "id": f"probe-{i:02d}"}) for i in range(PROBE_SIZE - 3)]
    return [Notification(id="probe-short", title="ok"), *synthetic,
            Notification(id="probe-digest", app="Gmail", title="Platform weekly", body=_DIGEST),
            Notification(id="probe-long", app="Confluence", title="Quarterly review", body=_LONG_BODY)]


def compare(fast: Sequence[ClassificationResult], reference: Sequence[ClassificationResult],
            tolerance: float, seconds: float) -> SelfCheck:
    """The verdict of two scorings of the same probe (pure)."""
    differing: list[str] = []
    near_ties: list[str] = []
    max_gap = 0.0
    for mine, theirs in zip(fast, reference, strict=True):
        verdict, gap = _compare_one(mine, theirs, tolerance)
        max_gap = max(max_gap, gap)
        if verdict == "differs":
            differing.append(str(mine.id))
        elif verdict == "near tie":
            near_ties.append(str(mine.id))
    return SelfCheck(not differing and max_gap <= tolerance, seconds, len(fast), tolerance, max_gap,
                     differing, near_ties)


def _compare_one(mine: ClassificationResult, theirs: ClassificationResult, tolerance: float) -> tuple[str, float]:
    """same, differs or near tie, and the largest confidence gap of the decisions both answered alike."""
    if mine.truncated != theirs.truncated:
        return "differs", 0.0
    gap = 0.0
    for name in ("folder", "priority"):  # in the answer's order: a decision depends on the one before
        a, b = getattr(mine.confidence, name), getattr(theirs.confidence, name)
        if getattr(mine, name) != getattr(theirs, name):
            tie = a is not None and b is not None and max(a, b) <= 0.5 + tolerance
            return ("near tie" if tie else "differs"), gap
        if a is None or b is None:
            if a != b:
                return "differs", gap
            continue
        gap = max(gap, abs(a - b))
    return "same", gap


def run_self_check(classifier: Any, dtype: torch.dtype) -> SelfCheck:
    """Score the probe with the classifier's fast engine, then with the reference (the engine set aside).

    Constrained scoring whatever NOTIF_DECODING says (generate mode calls the engine for its fallbacks), in two
    passes as serving makes them: a short one (a CUDA graph's route on a GPU) and a long one (FlexAttention's).
    """
    probe = probe_notifications()
    passes = (probe[:SHORT_PASS], probe[SHORT_PASS:])
    started = time.perf_counter()
    with _constrained(classifier):
        fast = [result for part in passes for result in classifier.classify(part)]
        engine, classifier.engine = classifier.engine, None
        try:
            reference = [result for part in passes for result in classifier.classify(part)]
        finally:
            classifier.engine = engine
    return compare(fast, reference, TOLERANCE.get(dtype, DEFAULT_TOLERANCE), time.perf_counter() - started)


@contextmanager
def _constrained(classifier: Any) -> Iterator[None]:
    settings = classifier.settings
    if settings.decoding != "constrained":
        classifier.settings = settings.with_overrides(decoding="constrained")
    try:
        yield
    finally:
        classifier.settings = settings


def check_engine(classifier: Any) -> tuple[dict[str, str], SelfCheck | None]:
    """The fast engine proves itself on this device, or the reference serves (NOTIF_ENGINE=fast: or nothing).

    Returns notif_engine_info's labels (which engine scores, and why) and the check, where one ran. Its
    verdict, time and numbers are also the engine_self_check log event (info when it passed, error when not).
    """
    settings = classifier.settings
    if classifier.serving.engine is None:
        auto_cpu = settings.engine == "auto" and classifier.device.type != "cuda"
        reason = ("configured" if settings.engine == "reference"
                  else "cpu_default" if auto_cpu else "unsupported_model")
        return {"engine": "reference", "reason": reason}, None
    check = run_self_check(classifier, classifier._dtype)
    if check.passed:
        log.info("engine_self_check", extra={**check.fields(), "engine": "fast"})
        return {"engine": "fast", "reason": "self_check_passed"}, check
    if settings.engine == "fast":
        log.error("engine_self_check", extra={**check.fields(), "engine": "none"})
        raise EngineSelfCheckFailed(check.describe() + "; NOTIF_ENGINE=fast makes this fatal")
    log.error("engine_self_check", extra={**check.fields(), "engine": "reference"})
    classifier.serving.engine = None
    return {"engine": "reference", "reason": "self_check_failed"}, check
