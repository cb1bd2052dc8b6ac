"""`notif-train`: synth (make a labelled set), train (QLoRA adapter, or --dry-run plan), eval (report)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer import TrainerError
from worker.commands.cli import run_bounded, shutdown_timeout_s
from worker.commands.stopping import EARLY, PROCESS_EXIT, StopDeadline

# Imported where they are used: this module loads before the stop handlers are in place (`entry`, `main`), so
# it imports next to nothing (the settings' pydantic, torch and the rest come after).


def run_synth(args: argparse.Namespace) -> int:
    from trainer.synth import write_split

    counts = write_split(Path(args.out), n=args.n, seed=args.seed, train_size=args.train_size)
    for name, count in counts.items():
        print(f"{Path(args.out) / name}: {count} examples")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from trainer.config import config_from_args

    config = config_from_args(args)
    if config.dry_run:
        from trainer.data import describe_problems
        from trainer.plan import dry_run

        plan, dataset = dry_run(config)
        print("\n".join([dataset.summary(), *describe_problems(dataset.problems), *plan.lines()]))
        return 0
    from trainer.train import train

    summary = train(config, progress=not args.no_progress)
    print(json.dumps({key: value for key, value in summary.items() if key != "history"}, indent=2))
    print(f"adapter saved to {config.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate
    from worker.commands.flags import settings_from_args

    settings = settings_from_args(args)
    compare = Path(args.compare) if args.compare else None
    results = evaluate(settings, Path(args.data), Path(args.out), limit=args.limit, compare=compare,
                       progress=not args.no_progress, calibrate=args.calibrate)
    accuracy = results["accuracy"]
    print(f"folder {accuracy['folder']:.1%}  priority {accuracy['priority']:.1%}  both {accuracy['both']:.1%}  "
          f"parse failures {results['parse_failures']['count']}  (n={results['n']})")
    if "calibration" in results:
        calibration = results["calibration"]
        for decision, temperature in calibration["temperature"].items():
            print(f"{decision}: temperature {temperature:g}, ECE {calibration['ece_before'][decision]:.3f} -> "
                  f"{calibration['ece_after'][decision]:.3f}")
        print(f"calibration: {calibration['file']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from trainer.config import TrainConfig, add_config_flags
    from worker.commands.flags import add_model_flags
    from worker.settings import Settings

    parser = argparse.ArgumentParser(prog="notif-train", description="Build and evaluate the classifier's adapter.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic labelled set (train.jsonl, test.jsonl)")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--n", type=int, default=16_001, help="examples in all (default: 16001)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--train-size", type=int, help="examples in train.jsonl (default: 12000, or 3/4 of --n)")
    synth.set_defaults(func=run_synth)

    train = sub.add_parser("train", help="fine-tune a LoRA adapter (QLoRA by default); --dry-run prints the plan")
    env = Settings()  # the worker's NOTIF_MODEL and NOTIF_MAX_INPUT_TOKENS are the defaults
    add_config_flags(train, TrainConfig(model=env.model, max_input_tokens=env.max_input_tokens))
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser("eval", help="evaluate a model (+ adapter) on a labelled file (worker classifier)")
    add_model_flags(evaluate)
    evaluate.add_argument("--data", required=True, help="labelled file: chat or flat JSONL")
    evaluate.add_argument("--limit", type=int, help="evaluate the first N examples only (the reference used 500)")
    evaluate.add_argument("--out", required=True, help="directory for results.json, report.md and the PNGs")
    evaluate.add_argument("--compare", help="a previous results.json to compare against")
    evaluate.add_argument("--calibrate", action="store_true",
                          help="fit one confidence temperature per decision on this data and write "
                               "calibration.json into the adapter (the worker applies it)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=run_eval)
    return parser


def entry() -> int:
    """The process's entry (`notif-train`, `python -m trainer`): ``main``, then a bounded exit."""
    EARLY.install()  # first: a SIGTERM while the rest imports is remembered, never fatal
    code = main()
    StopDeadline(shutdown_timeout_s()).arm(PROCESS_EXIT)  # the interpreter's exit (threads, exit handlers) too
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (also in-process, from tests: no deadline is armed once the command returns)."""
    EARLY.install()
    args = build_parser().parse_args(argv)
    return run_bounded(lambda: _run(args))  # SIGTERM interrupts a run (exit 130) under the stop deadline


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
