"""The demo's pure parts: pacing, result lines, and its two subcommands."""

from __future__ import annotations

import pytest

from worker.commands.cli import build_parser
from worker.commands.demo import _left, format_result, remember_text
from worker.commands.produce_demo import send_delay_s
from worker.contract import ClassificationResult, Confidence


def test_pacing_follows_the_start_time_not_the_last_send() -> None:
    assert send_delay_s(0, rate=10, started=100.0, now=100.0) == 0.0
    assert send_delay_s(5, rate=10, started=100.0, now=100.2) == pytest.approx(0.3)
    # Behind schedule (a slow send): no wait, so the average rate catches up.
    assert send_delay_s(5, rate=10, started=100.0, now=101.0) == 0.0


def test_result_line_shows_labels_confidence_and_the_text() -> None:
    texts: dict[str, str] = {}
    remember_text(texts)({"id": "n1", "app": "Slack", "title": "Deploy failed", "body": ""})
    result = ClassificationResult(
        id="n1", folder="Work", priority=3, priority_label="High",
        confidence=Confidence(folder=0.912, priority=0.5), decoding="constrained", truncated=False, model="m",
    )
    line = format_result(result.to_json_bytes(), texts)
    assert line.split()[:3] == ["Work", "3", "High"]
    assert "0.91/0.50" in line and line.endswith("Slack | Deploy failed")
    assert texts == {}, "a printed result's text is forgotten"


def test_long_text_is_cut_to_one_line() -> None:
    texts = {"n": "x" * 500}
    result = ClassificationResult(
        id="n", folder="Alerts", priority=1, priority_label="Low", confidence=Confidence(folder=None, priority=None),
        decoding="generate", truncated=False, model="m",
    )
    line = format_result(result.to_json_bytes(), texts)
    assert len(line) < 120 and line.endswith("…")


def test_count_limits_what_is_left_to_print() -> None:
    assert _left(None, 7) is None
    assert _left(5, 3) == 2


def test_demo_and_producer_are_registered_with_their_options() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo", "--model", "/m", "--quantization", "none", "--device", "cpu", "--count", "3"])
    assert (demo.command, demo.model, demo.count, demo.rate) == ("demo", "/m", 3, 5.0)
    produce = parser.parse_args(["produce-demo", "--rate", "50"])
    assert (produce.command, produce.rate, produce.count) == ("produce-demo", 50.0, None)
