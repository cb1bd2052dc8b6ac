"""The model flags shared by classify, serve, demo, bench and the trainer, and Settings with them applied."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from worker.settings import Settings


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model flags shared by classify, serve, demo and bench (each overrides its NOTIF_* variable)."""
    parser.add_argument("--model", help="base model: hub id or local directory (NOTIF_MODEL)")
    parser.add_argument("--adapter", help="LoRA adapter directory or hub id (NOTIF_ADAPTER)")
    parser.add_argument("--quantization", choices=["auto", "nf4", "none"], help="NOTIF_QUANTIZATION")
    parser.add_argument("--decoding", choices=["constrained", "generate"], help="NOTIF_DECODING")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (NOTIF_DEVICE)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], help="NOTIF_DTYPE")
    parser.add_argument("--merge-adapter", action="store_true", default=None, help="NOTIF_MERGE_ADAPTER")
    parser.add_argument("--max-batch-size", type=int, help="NOTIF_MAX_BATCH_SIZE")
    parser.add_argument("--random-model", choices=["tiny", "0.6b"],
                        help="no hub needed: a random-weight Qwen3 (real tokenizer) instead of --model; "
                             "answers are meaningless, the plumbing and speed are real")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the model flags of `add_model_flags` applied on top."""
    keys = ("model", "adapter", "quantization", "decoding", "device", "dtype", "merge_adapter", "max_batch_size")
    overrides = {key: getattr(args, key, None) for key in keys}
    if getattr(args, "random_model", None):
        from worker.dev.models import cached_random_qwen3

        size = args.random_model
        overrides["model"] = str(cached_random_qwen3(size))
    return Settings().with_overrides(**overrides)


def settings_or_none(args: argparse.Namespace) -> Settings | None:
    """settings_from_args, or None after printing why the settings are invalid (the command then exits 2)."""
    try:
        return settings_from_args(args)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return None
