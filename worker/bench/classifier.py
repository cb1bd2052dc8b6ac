"""`notif-worker bench classifier`: throughput and latency of the two decoding modes, per model variant.

Same notifications, same model, one run: constrained scoring vs free generation (the reference's way) at
several batch sizes, for NF4, bf16 and a merged adapter. Prints a table, writes JSON and a plot.
Without --model it builds a random-weight Qwen3 from its config (tiny, or the full 0.6B architecture):
speed does not depend on the weight values, and the tokenizer is the real one, so token counts are real.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.bench.common import bench_notifications, machine, write_outputs
from worker.contract import Notification
from worker.settings import Settings

# The canonical answer is 12 tokens + <|im_end|>: what a trained model generates. A random-weight model
# never stops by itself, so generation is capped at that length to time what the reference paid.
ANSWER_TOKENS = 13
VARIANTS = ("nf4", "bf16", "merged")


@dataclass
class Row:
    variant: str
    mode: str
    batch_size: int
    items: int
    items_per_s: float
    prompt_tokens_per_s: float
    p50_ms: float
    p99_ms: float
    parse_failures: int
    disagreements: int | None = None
    fallback_s: float = 0.0  # of the timed seconds, those spent re-scoring answers that did not parse
    items_per_s_without_fallback: float | None = None  # generate: as if every answer had parsed
    engine: str = "reference"  # constrained scoring by: reference (transformers as loaded) or fast (engine.py)
    engine_disagreements: int | None = None  # fast rows: answers unlike the reference's on the same items
    max_confidence_change: float | None = None  # fast rows: largest |confidence - reference's|
    # fast engine rows: the same batches with the next one launched before the last is read back (the inference
    # loop's 2 batches in flight), and the host time of one launch call (on a GPU: packing, no device wait; the
    # reference engine computes inside launch, so it is not timed twice)
    pipelined_items_per_s: float | None = None
    launch_p50_ms: float | None = None
    read_back_p50_ms: float | None = None  # fast rows: host time of reading back a finished batch (trie, results)
    tokenize_us_per_item: float | None = None  # fast rows: rendering + tokenizing one notification (at intake)


def register_classifier(subparsers: Any) -> None:
    parser = subparsers.add_parser("classifier", help="constrained vs generate, per variant and batch size")
    parser.add_argument("--model", help="hub id or directory; default: a random-weight Qwen3 of --size")
    parser.add_argument("--size", choices=["tiny", "0.6b"], default="tiny", help="random model architecture")
    parser.add_argument("--variants", default="nf4,bf16", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--quantization", choices=["nf4", "none"], help="shorthand: only this variant")
    parser.add_argument("--lora", action="store_true", help="serve through a random LoRA adapter (r=16, 7 modules)")
    parser.add_argument("--adapter", help="a real adapter directory instead of --lora")
    parser.add_argument("--modes", default="constrained,generate", help="decoding modes to compare")
    parser.add_argument("--engines", default="reference",
                        help="comma list of reference, fast: constrained scoring by each, compared on the same items")
    parser.add_argument("--batch-sizes", default="1,8,64", help="comma list")
    parser.add_argument("--n", type=int, default=128, help="notifications per configuration (at most)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per configuration")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write items/s vs batch size here (PNG)")
    parser.set_defaults(func=run_classifier)


def run_classifier(args: argparse.Namespace) -> int:
    from worker.dev.models import cached_random_qwen3

    variants = ["nf4" if args.quantization == "nf4" else "bf16"] if args.quantization else args.variants.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = args.modes.split(",")
    engines = args.engines.split(",")
    model = args.model or str(cached_random_qwen3(args.size))
    adapter = args.adapter or (random_adapter(model) if args.lora else None)
    notifications = bench_notifications(max(args.n, max(batch_sizes)))
    report: dict[str, Any] = {"machine": machine(), "model": args.model or f"random Qwen3 ({args.size})",
                              "adapter": adapter and ("random LoRA r=16" if args.lora else adapter), "rows": [],
                              "memory": {}}
    print(f"machine: {report['machine']}", file=sys.stderr)
    report["errors"] = {}
    for variant in variants:
        settings = variant_settings(variant, model, adapter, args.device)
        try:
            rows, report["memory"][variant] = bench_variant(settings, variant, modes, engines, batch_sizes,
                                                            notifications, args.max_seconds)
        except Exception as exc:  # one broken variant (e.g. no 4-bit kernels) must not hide the others
            report["errors"][variant] = f"{type(exc).__name__}: {exc}"
            print(f"  {variant}: FAILED {report['errors'][variant]}", file=sys.stderr)
            continue
        report["rows"].extend(asdict(row) for row in rows)
        if args.json:  # after every variant: a run cut short by a time limit keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(report["rows"])
    write_outputs(report, args, plot)
    return 0


def bench_variant(settings: Settings, variant: str, modes: list[str], engines: list[str], batch_sizes: list[int],
                  notifications: list[Notification], max_seconds: float) -> tuple[list[Row], dict[str, int]]:
    """Load the variant's model once; time every (mode, engine, batch size); compare modes and engines."""
    from worker.model.classifier import Classifier
    from worker.model.loading import load_model

    loaded = load_model(settings)
    memory = {"model_bytes": int(loaded.model.get_memory_footprint())}
    fast = None
    if "fast" in engines:
        fast = Classifier(loaded, settings.with_overrides(engine="fast")).engine
        if fast is None:
            raise RuntimeError("the fast engine cannot run this model (see the log)")
        memory["fast_engine_bytes"] = fast.weight_bytes()
    rows: list[Row] = []
    for batch_size in batch_sizes:
        answers: dict[tuple[str, str], list[Answered]] = {}
        for mode, engine in [(m, e) for m in modes for e in (engines if m == "constrained" else ["reference"])]:
            classifier = Classifier(loaded, settings.with_overrides(
                decoding=mode, max_batch_size=batch_size, max_batch_tokens=10**9, max_new_tokens=ANSWER_TOKENS,
                engine=engine), engine=fast if engine == "fast" else None)
            row, answers[(mode, engine)] = time_configuration(classifier, variant, mode, batch_size, notifications,
                                                              max_seconds)
            row.engine = engine
            rows.append(row)
            print(f"  {variant:7s} {mode:11s} {engine:9s} b={batch_size:<4d} {row.items_per_s:9.1f} items/s  "
                  f"p50 {row.p50_ms:8.1f} ms", file=sys.stderr, flush=True)
        compare(rows[-len(answers):], answers)
    memory["cuda_max_allocated_bytes"] = _cuda_peak()
    del loaded, fast
    _free_gpu()
    return rows, memory


Answered = tuple[str, int, float, float]  # folder, priority, confidence of each


def compare(rows: list[Row], answers: dict[tuple[str, str], list[Answered]]) -> None:
    """Cross-mode disagreements on the last row (as before); fast rows against the reference's answers."""
    reference = answers.get(("constrained", "reference"))
    for row in rows:
        mine = answers[(row.mode, row.engine)]
        if row.engine == "fast" and reference is not None:
            pairs = list(zip(mine, reference, strict=False))
            row.engine_disagreements = sum(a[:2] != b[:2] for a, b in pairs)
            row.max_confidence_change = round(max(max(abs(a[2] - b[2]), abs(a[3] - b[3])) for a, b in pairs), 6)
    generated = answers.get(("generate", "reference"))
    if reference is not None and generated is not None:
        common = min(len(reference), len(generated))
        rows[-1].disagreements = sum(a[:2] != b[:2] for a, b in zip(reference[:common], generated[:common],
                                                                    strict=True))


def time_configuration(classifier: Any, variant: str, mode: str, batch_size: int,
                       notifications: list[Notification], max_seconds: float) -> tuple[Row, list[Answered]]:
    fallback = _time_fallback(classifier) if mode == "generate" else [0.0]
    classifier.classify(notifications[:batch_size])  # warm-up: allocator, kernels, the prefix cache
    fallback[0] = 0.0
    latencies: list[float] = []
    answers: list[Answered] = []
    tokens = parse_failures = 0
    budget_end = time.perf_counter() + max_seconds
    for start in range(0, len(notifications) - batch_size + 1, batch_size):
        chunk = notifications[start:start + batch_size]
        sync()
        began = time.perf_counter()
        results = classifier.classify(chunk)
        sync()
        latencies.append(time.perf_counter() - began)
        tokens += sum(classifier.count_tokens(n) for n in chunk)
        answers.extend((r.folder, r.priority, r.confidence.folder or 0.0, r.confidence.priority or 0.0)
                       for r in results)
        parse_failures += sum(r.decoding == "generate_fallback" for r in results)
        if time.perf_counter() > budget_end and len(latencies) >= 3:
            break
    total = sum(latencies)
    ordered = sorted(latencies)
    generated = len(answers) / (total - fallback[0]) if mode == "generate" and total > fallback[0] else None
    pipelined = (time_pipelined(classifier, [notifications[i * batch_size:(i + 1) * batch_size]
                                             for i in range(len(latencies))], max_seconds / 2)
                 if mode == "constrained" and getattr(classifier, "engine", None) is not None else (None, None))
    host = host_costs(classifier, notifications[:batch_size]) if pipelined[0] is not None else (None, None)
    return Row(
        variant=variant, mode=mode, batch_size=batch_size, items=len(answers),
        items_per_s=round(len(answers) / total, 2), prompt_tokens_per_s=round(tokens / total, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        parse_failures=parse_failures, fallback_s=round(fallback[0], 4),
        items_per_s_without_fallback=None if generated is None else round(generated, 2),
        pipelined_items_per_s=pipelined[0], launch_p50_ms=pipelined[1],
        read_back_p50_ms=host[0], tokenize_us_per_item=host[1],
    ), answers


def host_costs(classifier: Any, chunk: list[Notification], repeats: int = 3) -> tuple[float, float]:
    """(ms, us): the CPU work around a pass that batches in flight must hide: reading back a batch whose pass
    has finished (trie walk, results), and rendering + tokenizing one notification (at intake, uncached)."""
    reads = []
    for _ in range(repeats):
        collect = classifier.launch(chunk)
        sync()
        began = time.perf_counter()
        collect()
        reads.append(time.perf_counter() - began)
    began = time.perf_counter()
    for notification in chunk:
        classifier._prepare(notification)  # uncached: count_tokens goes through an lru_cache
    tokenize = (time.perf_counter() - began) / len(chunk)
    return round(statistics.median(reads) * 1000, 3), round(tokenize * 1e6, 1)


def time_pipelined(classifier: Any, chunks: list[list[Notification]], max_seconds: float) -> tuple[float, float]:
    """(items/s, p50 ms of a launch call) over ``chunks`` (at least 3, then until ``max_seconds``) with 2
    batches in flight: each batch is launched before the one before it is read back, as the inference loop
    does (worker/stream/flow/inference.py)."""
    launches: list[float] = []
    pending = None
    items = 0
    sync()
    began = time.perf_counter()
    for chunk in chunks:
        launched = time.perf_counter()
        collect = classifier.launch(chunk)
        launches.append(time.perf_counter() - launched)
        items += len(chunk)
        if pending is not None:
            pending()
        pending = collect
        if len(launches) >= 3 and time.perf_counter() - began > max_seconds:
            break
    if pending is not None:
        pending()
    sync()
    seconds = time.perf_counter() - began
    return round(items / seconds, 2), round(statistics.median(launches) * 1000, 2)


def _time_fallback(classifier: Any) -> list[float]:
    """Time the constrained re-scoring that generate mode runs for answers that do not parse.

    A random model never writes JSON, so every generated item falls back; a trained one rarely does.
    The seconds let the report say what generation alone costs. Returns a one-element accumulator.
    """
    spent = [0.0]
    score = classifier.score

    def timed(prompts: Any) -> Any:
        began = time.perf_counter()
        try:
            return score(prompts)
        finally:
            sync()
            spent[0] += time.perf_counter() - began

    classifier.score = timed
    return spent


def variant_settings(variant: str, model: str, adapter: str | None, device: str) -> Settings:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant == "merged" and adapter is None:
        raise SystemExit("the merged variant needs --lora or --adapter")
    values: dict[str, Any] = {"model": model, "adapter": adapter, "device": device, "max_input_tokens": 384,
                              "quantization": "nf4" if variant == "nf4" else "none",
                              "merge_adapter": variant == "merged"}
    if variant != "nf4":
        values["dtype"] = "bfloat16" if _cuda() else "float32"
    return Settings.model_validate(values)


def random_adapter(model: str, seed: int = 0) -> str:
    """A LoRA adapter of the reference's shape with random weights, saved once next to the model (per seed)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from worker.contract import contract_fingerprint
    from worker.model.loading import CONTRACT_FILE

    out = Path(model).with_name(Path(model).name + "-lora-r16" + (f"-seed{seed}" if seed else ""))
    if (out / CONTRACT_FILE).is_file():
        return str(out)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model)
    config = LoraConfig(r=16, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(base, config).save_pretrained(str(out))
    (out / CONTRACT_FILE).write_text(json.dumps(contract_fingerprint()))
    return str(out)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("variant", "mode", "engine", "batch", "items/s", "2 in flight items/s", "launch ms", "read-back ms",
              "prompt tok/s", "p50 ms", "p99 ms", "fallbacks", "disagree", "vs reference")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        disagree = "" if r["disagreements"] is None else str(r["disagreements"])
        versus = "" if r.get("engine_disagreements") is None else (
            f"{r['engine_disagreements']} answers, max conf change {r['max_confidence_change']:.2g}")
        print(f"| {r['variant']} | {r['mode']} | {r.get('engine', 'reference')} | {r['batch_size']} | "
              f"{r['items_per_s']:.1f} | {_cell(r.get('pipelined_items_per_s'))} | {_cell(r.get('launch_p50_ms'))} | "
              f"{_cell(r.get('read_back_p50_ms'))} | "
              f"{r['prompt_tokens_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['parse_failures']} | {disagree} | {versus} |")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for batch in dict.fromkeys(r["batch_size"] for r in rows):
            pair = {r["mode"]: r for r in rows if r["variant"] == variant and r["batch_size"] == batch
                    and r.get("engine", "reference") == "reference"}
            if len(pair) == 2 and pair["generate"]["items_per_s"]:
                constrained, generate = pair["constrained"]["items_per_s"], pair["generate"]
                alone = generate.get("items_per_s_without_fallback")
                note = f" ({constrained / alone:.1f}x against generation alone, without fallback)" if alone else ""
                print(f"speedup {variant} b={batch}: constrained/generate = "
                      f"{constrained / generate['items_per_s']:.1f}x{note}")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = report["rows"]
    for key in dict.fromkeys((r["variant"], r["mode"], r.get("engine", "reference")) for r in rows):
        points = [(r["batch_size"], r["items_per_s"]) for r in rows
                  if (r["variant"], r["mode"], r.get("engine", "reference")) == key]
        style = "--" if key[1] == "generate" else ("-" if key[2] == "fast" else ":")
        ax.plot(*zip(*points, strict=True), marker="o", linestyle=style,
                label=f"{key[0]} / {key[1]}" + (f" / {key[2]}" if key[1] == "constrained" else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("notifications / s")
    machine_info = report["machine"]
    device = machine_info["gpu"] if machine_info["gpu"] != "none" else machine_info["cpu"]
    ax.set_title(f"{report['model']} on {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cuda_peak() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # each variant's peak on its own
