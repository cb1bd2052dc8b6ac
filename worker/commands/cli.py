"""`notif-worker`: the command line. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from worker.commands.stopping import EARLY, PROCESS_EXIT, StopDeadline, interrupt_within

# Each module exposes `register(subparsers)`, which adds its subcommand and sets `func` to a handler
# taking the parsed namespace and returning an exit code.
SUBCOMMAND_MODULES = (
    "worker.commands.classify",
    "worker.commands.config",
    "worker.bench.cli",
    "worker.commands.demo",
    "worker.commands.doctor",
    "worker.commands.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notif-worker", description="Classify notifications into folder and priority with Qwen3."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def shutdown_timeout_s() -> float:
    """NOTIF_SHUTDOWN_TIMEOUT_S as the settings read it (its default when the settings do not validate)."""
    from pydantic import ValidationError

    from worker.settings import Settings

    try:
        return Settings().shutdown_timeout_s
    except ValidationError:
        return float(Settings.model_fields["shutdown_timeout_s"].default)


def entry() -> int:
    """The process's entry (`notif-worker`, `python -m worker`): ``main``, then a bounded exit."""
    EARLY.install()  # first: a SIGTERM while the subcommands import is remembered, never fatal
    code = main()
    StopDeadline(shutdown_timeout_s()).arm(PROCESS_EXIT)  # the interpreter's exit (threads, exit handlers) too
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (also in-process, from tests: no deadline is armed once the command returns)."""
    EARLY.install()  # before the subcommands' heavy imports: a SIGTERM now is remembered, never fatal
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "demo"):  # they take the signals over themselves, early ones included
        return int(args.func(args))
    return run_bounded(lambda: int(args.func(args)))


def run_bounded(command: Callable[[], int]) -> int:
    """A command without a graceful stop of its own (classify, the benches, config, doctor; notif-train's):
    SIGTERM/SIGINT interrupt it (exit 130) under the stop deadline (worker/commands/stopping.py), and one that
    came before it started stops it at once (exit 0)."""
    interrupt_within(shutdown_timeout_s())  # from here on a signal interrupts the command
    try:
        if EARLY.received is not None:  # one that came earlier (checked after: none can fall between)
            print(f"stopped by {EARLY.received} before starting", file=sys.stderr)
            return 0
        return command()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
