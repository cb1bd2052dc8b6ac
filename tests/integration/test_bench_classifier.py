"""`bench classifier` on the tiny model: both modes timed, fallback time separated, answers compared."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from worker.bench.classifier import bench_notifications, bench_variant, print_table
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_rows_per_mode_and_generation_alone(make_settings: Callable[..., Settings],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rows, memory = bench_variant(make_settings(max_input_tokens=128), "bf16", ["constrained", "generate"],
                                 ["reference", "fast"], [4], bench_notifications(8), max_seconds=30)
    constrained, fast, generate = rows
    assert [(r.mode, r.engine) for r in rows] == [("constrained", "reference"), ("constrained", "fast"),
                                                  ("generate", "reference")]
    assert constrained.items == fast.items == generate.items == 8
    # engines side by side: the fast rows say how far they are from the reference on the same items
    assert fast.engine_disagreements == 0 and fast.max_confidence_change is not None
    assert fast.max_confidence_change <= 1e-5 and constrained.engine_disagreements is None
    assert memory["fast_engine_bytes"] > 0 and memory["model_bytes"] > memory["fast_engine_bytes"]
    assert constrained.fallback_s == 0 and constrained.items_per_s_without_fallback is None
    # the fast engine's rows are timed once more with 2 batches in flight (the reference computes inside launch)
    assert fast.pipelined_items_per_s is not None and fast.pipelined_items_per_s > 0
    assert fast.launch_p50_ms is not None and fast.launch_p50_ms > 0
    assert fast.read_back_p50_ms is not None and 0 < fast.read_back_p50_ms < fast.launch_p50_ms  # the CPU computes
    assert fast.tokenize_us_per_item is not None and fast.tokenize_us_per_item > 0  # in launch, not in read-back
    assert constrained.pipelined_items_per_s is None and generate.pipelined_items_per_s is None
    # a random model never writes JSON: every generated item is re-scored, and that time is set apart
    assert generate.parse_failures == 8
    assert generate.fallback_s > 0
    assert generate.items_per_s_without_fallback is not None
    assert generate.items_per_s_without_fallback > generate.items_per_s
    assert generate.disagreements == 0  # the fallback is the constrained answer
    print_table([row.__dict__ for row in rows])
    assert "against generation alone, without fallback" in capsys.readouterr().out
