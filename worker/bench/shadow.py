"""`notif-worker bench shadow`: what a shadow adapter costs the serving path, per batch size.

One loaded base with two LoRA adapters of the reference's shape (random weights, different seeds): the
serving one and the shadow. Each batch is scored by the serving adapter (what the output topic waits for)
and then by the shadow (what runs after it on the inference thread, before the next batch), as the worker
does. Reported: the serving and the shadow milliseconds per batch (p50), the shadow's cost as a share of
the serving time, and the throughput the inference thread keeps with the shadow on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from worker.bench.classifier import random_adapter, sync, variant_settings
from worker.bench.common import bench_notifications, machine, write_outputs


def register_shadow(subparsers: Any) -> None:
    parser = subparsers.add_parser("shadow", help="the shadow adapter's cost on the serving path")
    parser.add_argument("--size", choices=["tiny", "0.6b"], default="tiny", help="random model architecture")
    parser.add_argument("--model", help="hub id or directory; default: a random-weight Qwen3 of --size")
    parser.add_argument("--quantization", choices=["nf4", "none"], default="none")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma list")
    parser.add_argument("--n", type=int, default=64, help="notifications per batch size (at most)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write serving and shadow ms per batch here (PNG)")
    parser.set_defaults(func=run_shadow)


def run_shadow(args: argparse.Namespace) -> int:
    from worker.dev.models import cached_random_qwen3
    from worker.model.classifier import Classifier

    model = args.model or str(cached_random_qwen3(args.size))
    serving, candidate = random_adapter(model, seed=0), random_adapter(model, seed=1)
    base = variant_settings("nf4" if args.quantization == "nf4" else "bf16", model, serving, args.device)
    settings = base.with_overrides(shadow_adapter=candidate, shadow_topic="shadow", max_batch_tokens=10**9)
    classifier = Classifier.from_settings(settings)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    notifications = bench_notifications(max(args.n, max(batch_sizes)))
    report: dict[str, Any] = {"machine": machine(), "model": args.model or f"random Qwen3 ({args.size})",
                              "quantization": args.quantization, "adapters": "two random LoRA r=16, 7 modules",
                              "rows": []}
    print(f"machine: {report['machine']}", file=sys.stderr)
    for batch_size in batch_sizes:
        row = time_pair(classifier, notifications, batch_size, args.max_seconds)
        report["rows"].append(row)
        print(f"  b={batch_size:<4d} serving {row['serving_p50_ms']:8.1f} ms  shadow {row['shadow_p50_ms']:8.1f} ms"
              f"  cost {row['shadow_cost']:.0%}", file=sys.stderr, flush=True)
    print_table(report["rows"])
    write_outputs(report, args, plot)
    return 0


def time_pair(classifier: Any, notifications: list[Any], batch_size: int, max_seconds: float) -> dict[str, Any]:
    """Serving then shadow on the same batches; their times per batch and what the shadow costs."""
    classifier.classify(notifications[:batch_size])  # warm-up, and each adapter's system-prompt cache
    classifier.classify_shadow(notifications[:batch_size])
    serving: list[float] = []
    shadow: list[float] = []
    agree = items = 0
    deadline = time.perf_counter() + max_seconds
    for start in range(0, len(notifications) - batch_size + 1, batch_size):
        chunk = notifications[start:start + batch_size]
        sync()
        began = time.perf_counter()
        served = classifier.classify(chunk)
        sync()
        middle = time.perf_counter()
        shadowed = classifier.classify_shadow(chunk)
        sync()
        serving.append(middle - began)
        shadow.append(time.perf_counter() - middle)
        items += len(chunk)
        agree += sum(a.folder == b.folder and a.priority == b.priority for a, b in zip(served, shadowed, strict=True))
        if time.perf_counter() > deadline and len(serving) >= 3:
            break
    return {
        "batch_size": batch_size, "batches": len(serving), "items": items,
        "serving_p50_ms": round(statistics.median(serving) * 1000, 2),
        "shadow_p50_ms": round(statistics.median(shadow) * 1000, 2),
        "shadow_cost": round(sum(shadow) / sum(serving), 3),
        "items_per_s_serving_alone": round(items / sum(serving), 2),
        "items_per_s_with_shadow": round(items / (sum(serving) + sum(shadow)), 2),
        "both_agree": round(agree / items, 3),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| batch | serving p50 ms | shadow p50 ms | shadow cost | items/s alone | items/s with shadow |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['serving_p50_ms']:.1f} | {r['shadow_p50_ms']:.1f} | {r['shadow_cost']:.0%} | "
              f"{r['items_per_s_serving_alone']:.2f} | {r['items_per_s_with_shadow']:.2f} |")


def plot(report: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [str(r["batch_size"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [r["serving_p50_ms"] for r in rows], width=0.4, label="serving")
    ax.bar([p + 0.2 for p in positions], [r["shadow_p50_ms"] for r in rows], width=0.4, label="shadow")
    ax.set_xticks(list(positions), labels)
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per batch (p50)")
    info = report["machine"]
    device = info["gpu"] if info["gpu"] != "none" else info["cpu"]
    ax.set_title(f"shadow adapter cost: {report['model']}, {report['quantization']}, on {device}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
