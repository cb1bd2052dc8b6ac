"""Log configuration: JSON lines, level filtering, and repeated library warnings thinned out."""

from __future__ import annotations

import io
import json
import logging

import structlog

from worker.observe.logging import RepeatFilter, configure_logging


def test_json_lines_with_level_filter() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger("worker.test").debug("hidden")
    structlog.get_logger("worker.test").warning("dead_letter", reason="empty")
    logging.getLogger("aiokafka.conn").warning("Unable connect to %s", "x:1")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["dead_letter", "Unable connect to x:1"]
    assert lines[0]["reason"] == "empty" and lines[0]["level"] == "warning"
    assert lines[1]["logger"] == "aiokafka.conn"


def test_a_library_records_extra_fields_are_the_events_fields() -> None:
    """worker/model logs through the standard library: engine_self_check's numbers ride in `extra`."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    logging.getLogger("worker.model.classifier").error("engine_self_check", extra={"seconds": 0.4, "passed": False})
    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["event"] == "engine_self_check" and line["seconds"] == 0.4 and line["passed"] is False


def test_repeat_filter_lets_one_per_interval_through() -> None:
    now = [0.0]
    repeat = RepeatFilter("aiokafka", 30.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, ("a",), None)

    assert repeat.filter(record("aiokafka.conn", "Unable connect to %s"))
    assert not repeat.filter(record("aiokafka.conn", "Unable connect to %s"))
    assert repeat.filter(record("aiokafka.conn", "Other %s"))
    assert repeat.filter(record("worker.stream.pipeline", "x"))
    assert repeat.filter(record("worker.stream.pipeline", "x"))
    now[0] = 31.0
    assert repeat.filter(record("aiokafka.conn", "Unable connect to %s"))
