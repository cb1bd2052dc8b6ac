"""`notif-worker classify`: JSONL notifications in, JSONL results out, rejected lines reported by number.

Exit status: 0 all lines classified, 1 some lines rejected (each reported on stderr), 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from worker.commands.flags import add_model_flags, settings_from_args
from worker.contract import InvalidNotification, Notification
from worker.envelopes.read import read_notification
from worker.protocol import NotificationClassifier, classify_ahead

CHUNK = 256  # lines read per classify() call: bounds memory, keeps the progress bar moving


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("classify", help="classify a JSONL file of notifications (offline)")
    parser.add_argument("input", nargs="?", default="-", help="JSONL file, or - for stdin (default)")
    parser.add_argument("--out", help="write results here instead of stdout")
    add_model_flags(parser)
    parser.set_defaults(func=run)


@dataclass
class Summary:
    lines: int = 0
    classified: int = 0
    rejected: int = 0
    parse_failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.classified / self.seconds if self.seconds > 0 else 0.0
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (f"lines={self.lines} classified={self.classified} rejected={self.rejected} "
                f"(reasons: {reasons}) parse_failures={self.parse_failures} items_per_s={rate:.1f}")


def run(args: argparse.Namespace) -> int:
    from worker.model.classifier import Classifier
    from worker.model.loading import ModelLoadError

    settings = settings_from_args(args)
    try:
        classifier = Classifier.from_settings(settings)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        source = sys.stdin.buffer if args.input == "-" else stack.enter_context(Path(args.input).open("rb"))
        sink = sys.stdout if args.out is None else stack.enter_context(Path(args.out).open("w", encoding="utf-8"))
        summary = classify_stream(classifier, source, sink, max_bytes=settings.max_message_bytes)
    print(f"summary: {summary.line()}", file=sys.stderr)
    return 1 if summary.rejected else 0


def classify_stream(classifier: NotificationClassifier, source: IO[bytes], sink: IO[str], *,
                    max_bytes: int) -> Summary:
    """Read JSONL from source, write one result line per valid notification, report rejects on stderr.

    Chunk n+1 is read, decoded and launched before chunk n's results are read back and written (on a GPU the
    model computes meanwhile)."""
    summary = Summary()
    started = time.perf_counter()
    progress = _progress()
    decoded = (_decode(chunk, summary, max_bytes) for chunk in _chunks(source))
    for (numbered, lines), results in classify_ahead(classifier, decoded):
        for (lineno, _), result in zip(numbered, results, strict=True):
            if result.id is None:
                result = result.model_copy(update={"id": f"line-{lineno}"})
            summary.parse_failures += result.decoding == "generate_fallback"
            sink.write(result.model_dump_json() + "\n")
        summary.classified += len(results)
        if progress is not None:
            progress.update(lines)
    if progress is not None:
        progress.close()
    summary.seconds = time.perf_counter() - started
    return summary


Numbered = list[tuple[int, Notification]]


def _decode(chunk: list[tuple[int, bytes]], summary: Summary, max_bytes: int
            ) -> tuple[tuple[Numbered, int], list[Notification]]:
    """((numbered notifications, lines read), notifications) of one chunk; rejects counted and reported."""
    numbered: Numbered = []
    for lineno, raw in chunk:
        summary.lines += 1
        read = read_notification(raw, max_bytes=max_bytes)
        if read.notification is not None:
            numbered.append((lineno, read.notification))
        else:
            exc = read.error or InvalidNotification("undecodable", "no notification")
            summary.rejected += 1
            summary.reasons[exc.reason] = summary.reasons.get(exc.reason, 0) + 1
            print(f"line {lineno}: rejected ({exc.reason}): {exc.message}", file=sys.stderr)
    return (numbered, len(chunk)), [n for _, n in numbered]


def _chunks(source: IO[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for lineno, line in enumerate(source, start=1):
        chunk.append((lineno, line.rstrip(b"\r\n")))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="line", desc="classify", file=sys.stderr)
