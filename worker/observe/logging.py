"""structlog configuration: JSON lines for machines, plain console lines on a terminal, one level for all.

Library logs (aiokafka) go through the same renderer, so an operator reads one format.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

LIBRARY_LEVEL = logging.WARNING  # aiokafka is chatty at info (every rebalance step); keep its warnings
# While a broker is down aiokafka repeats the same warnings about ten times a second; one of each per
# interval is enough (the worker's own broker_unreachable events say what is going on).
LIBRARY_REPEAT_INTERVAL_S = 30.0

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) as JSON or console lines."""
    stream = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # filter_by_level first: a disabled debug call costs a level check, not the whole chain
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # a stdlib record's `extra` fields become the event's (worker/model logs engine_self_check so)
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # JSON gets the traceback as one string field; the console renderer formats it itself
            *([structlog.processors.format_exc_info] if use_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    library = logging.getLogger("aiokafka")
    library.setLevel(max(LIBRARY_LEVEL, _LEVELS[level]))
    handler.addFilter(RepeatFilter("aiokafka", LIBRARY_REPEAT_INTERVAL_S))


class RepeatFilter(logging.Filter):
    """Lets one record per (logger, message template) through per interval, for loggers under ``prefix``."""

    def __init__(self, prefix: str, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        return True
