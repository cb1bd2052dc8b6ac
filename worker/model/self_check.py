"""The fast engine proves itself on the device it runs on: a fixed probe batch scored by it and by the reference.

The fast engine (dequantized NF4 weights, packed passes, CUDA graphs) is a second implementation of what the
transformers model computes; a new GPU, driver or torch build is the first place it runs. Before serving, the
probe (32 notifications from one word to a digest, one of them cut by NOTIF_MAX_INPUT_TOKENS) is scored by
both. An answer that differs, or confidences further apart than the tolerance (the largest gap, and the mean
gap over every decision both answered alike), fails the check:

- float32 (the CPU): 1e-4 for both. The two agree within 1e-5 there (tests/integration/test_engine.py).
- bfloat16 / float16 / NF4 (a GPU): largest 0.1, mean 0.02. bfloat16 keeps 8 significant bits, the fast
  engine merges the LoRA update into bf16 weights where the reference adds it beside them, and the two sum in
  different orders (packed rows, fused attention). Measured on the CPU's bf16 (tiny random Qwen3, the probe):
  a sound engine is at most 0.022 apart (mean 0.004) bare and 0.040 (mean 0.005) with NF4 and a random
  LoRA, whose deltas are larger than a trained adapter's; so 3e-2 would fail sound engines. Faults: 5% noise
  in one layer's MLP weights moves the mean to 0.018 and the largest to 0.055-0.075, positions off by one
  in the rotary table 0.023-0.030 and 0.10-0.15, 20% noise 0.06-0.07 and 0.2 with answers flipped. The
  mean is the steadier signal (one chaotic item moves the largest gap, a fault moves every item); the
  bounds leave the full-size model's deeper bf16 sums room. The GPU figures are pending: scripts/gpu_check.sh
  prints both gaps and the time.
- A near tie is no failure: where the two pick different answers for a decision and both are at most
  0.5 + the largest-gap tolerance sure, per-choice probabilities within that tolerance could pick either. A
  later decision of that item follows another branch and is not compared.
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
log = logging.getLogger("worker.model.classifier")  # the classifier's log: where its engine is chosen
_DIGEST = ("Weekly digest for the platform team: 14 pull requests merged, 3 waiting for review (auth service "
           "token refresh, billing export retries, the search index rebuild). The on-call handover is Thursday "
           "at 10:00; the runbook for the payment gateway was updated after last week's incident. ") * 3
_LONG_BODY = "The quarterly infrastructure review covers every service we run. " * 120  # far past 384 tokens


@dataclass(frozen=True)
class Tolerance:
    """How far apart the two engines' confidences may be: the largest gap, and the mean over the probe."""

    largest: float
    mean: float


TOLERANCE = {torch.float32: Tolerance(1e-4, 1e-4)}
DEFAULT_TOLERANCE = Tolerance(largest=0.1, mean=0.02)  # 16-bit: bfloat16, float16, NF4's bf16 compute


class EngineSelfCheckFailed(RuntimeError):
    """The fast engine's answers differ from the reference's on this device (NOTIF_ENGINE=fast makes it fatal)."""


@dataclass(frozen=True)
class SelfCheck:
    """What the check found: whether it passed, its time, which probe items differ and the largest gap."""

    passed: bool
    seconds: float
    items: int
    tolerance: Tolerance
    max_gap: float
    mean_gap: float
    differing: list[str] = field(default_factory=list)  # the ids of the probe items whose answers differ
    near_ties: list[str] = field(default_factory=list)  # answers apart where either could win (not failures)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed" + (
            f": answers differ on {', '.join(self.differing[:10])}" if self.differing else "")
        ties = f", {len(self.near_ties)} near tie(s) allowed" if self.near_ties else ""
        return (f"fast engine self-check {verdict}; confidence gap largest {self.max_gap:.2e} (tolerance "
                f"{self.tolerance.largest:g}), mean {self.mean_gap:.2e} (tolerance {self.tolerance.mean:g}) over "
                f"{self.items} notifications{ties} in {self.seconds:.2f}s")

    def fields(self) -> dict[str, Any]:
        """The numbers, as the fields of the engine_self_check log event."""
        return {"passed": self.passed, "seconds": round(self.seconds, 3), "items": self.items,
                "differing": self.differing, "near_ties": self.near_ties, "max_gap": self.max_gap,
                "mean_gap": self.mean_gap, "tolerance": self.tolerance.largest, "mean_tolerance": self.tolerance.mean,
                "summary": self.describe()}


def probe_notifications() -> list[Notification]:
    """The fixed probe: a one-word title, seeded synthetic notifications, a long digest, one cut by the budget."""
    from worker.synth.sampler import iter_raw_notifications

    stream = iter_raw_notifications(seed=4242)
    synthetic = [Notification.model_validate({**next(stream), "id": f"probe-{i:02d}"}) for i in range(PROBE_SIZE - 3)]
    return [Notification(id="probe-short", title="ok"), *synthetic,
            Notification(id="probe-digest", app="Gmail", title="Platform weekly", body=_DIGEST),
            Notification(id="probe-long", app="Confluence", title="Quarterly review", body=_LONG_BODY)]


def compare(fast: Sequence[ClassificationResult], reference: Sequence[ClassificationResult],
            tolerance: Tolerance, seconds: float) -> SelfCheck:
    """The verdict of two scorings of the same probe (pure)."""
    differing: list[str] = []
    near_ties: list[str] = []
    gaps: list[float] = []
    for mine, theirs in zip(fast, reference, strict=True):
        verdict = _compare_one(mine, theirs, tolerance.largest, gaps)
        if verdict == "differs":
            differing.append(str(mine.id))
        elif verdict == "near tie":
            near_ties.append(str(mine.id))
    largest, mean = max(gaps, default=0.0), sum(gaps) / len(gaps) if gaps else 0.0
    passed = not differing and largest <= tolerance.largest and mean <= tolerance.mean
    return SelfCheck(passed, seconds, len(fast), tolerance, largest, mean, differing, near_ties)


def _compare_one(mine: ClassificationResult, theirs: ClassificationResult, largest: float, gaps: list[float]) -> str:
    """same, differs or near tie; the confidence gap of each decision both answered alike goes to `gaps`."""
    if mine.truncated != theirs.truncated:
        return "differs"
    for name in ("folder", "priority"):  # in the answer's order: a decision depends on the one before
        a, b = getattr(mine.confidence, name), getattr(theirs.confidence, name)
        if getattr(mine, name) != getattr(theirs, name):
            tie = a is not None and b is not None and max(a, b) <= 0.5 + largest
            return "near tie" if tie else "differs"
        if a is None or b is None:
            if a != b:
                return "differs"
            continue
        gaps.append(abs(a - b))
    return "same"


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
