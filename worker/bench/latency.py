"""`notif-worker bench latency`: a worker subprocess under a fixed-rate producer, latency and lag at each rate.

The worker is `notif-worker serve` itself (instant classifier, optionally with a per-batch delay that
stands in for model time, or a real model via --model). For each rate, ascending, the producer sends
at that rate for --seconds; p50/p95/p99 come from the worker's own notif_end_to_end_latency_seconds
histogram (the phase's share: scraped before and after, buckets subtracted, interpolated like
PromQL's histogram_quantile); lag is messages sent minus results and dead letters the worker counted,
sampled while producing. A rate saturates the worker when the lag grows by more than 10% of the rate
per second; the run stops after the first such rate (higher ones would only grow it faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from worker.bench.common import (
    PARTITIONS,
    Message,
    add_broker_flags,
    bench_messages,
    broker_address,
    machine,
    write_outputs,
)
from worker.commands.stopping import EXIT_HUNG
from worker.dev.broker import create_topics_async, free_port
from worker.observe.logging import configure_logging
from worker.settings import Settings

LATENCY_METRIC = "notif_end_to_end_latency_seconds"
DONE_METRICS = ("notif_classifications", "notif_dead_letters")
SAMPLE_INTERVAL_S = 0.25
TICK_S = 0.005
GROWTH_FRACTION = 0.1  # lag growing faster than this share of the offered rate = saturated
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
WARMUP_MESSAGES = 200


@dataclass(frozen=True)
class Scrape:
    """What one /metrics read tells the benchmark: results so far and the latency histogram."""

    done: float
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last


@dataclass
class Feed:
    """The fixed-rate producer's progress (read by the lag sampler while it runs)."""

    sent: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the phase, lag)


def register_latency(subparsers: Any) -> None:
    parser = subparsers.add_parser("latency", help="worker subprocess under fixed-rate load: p50/p95/p99, lag")
    add_broker_flags(parser)
    parser.add_argument("--rates", default="250,500,1000,2000,4000", help="msgs/s, comma list (run ascending)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each rate is offered")
    parser.add_argument("--instant-delay-ms", type=float, default=0.0,
                        help="instant classifier: pretend each model call takes this long")
    parser.add_argument("--model", help="serve a real model instead: a directory, a hub id, `tiny` (the "
                                        "random-weight tiny Qwen3, CPU, no quantization) or `0.6b` (random, full size)")
    parser.add_argument("--lora", action="store_true", help="with --model: serve through a random LoRA (r=16)")
    parser.add_argument("--serve-flags", default="",
                        help="more `notif-worker serve` flags, e.g. '--max-batch-size 256'")
    parser.add_argument("--half-load", action="store_true",
                        help="after the sweep, offer half the most sustained rate and report its latency")
    parser.add_argument("--classifier-json", help="a `bench classifier` JSON: report ratio_to_classifier against it")
    parser.add_argument("--classifier-batch", type=int, default=64,
                        help="the batch size whose classifier items/s the ratio divides by (nf4, constrained)")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                        help="seconds the worker may take to load and become ready")
    parser.add_argument("--plot", help="write latency and throughput vs offered rate here (PNG)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=JSON",
                        help="run nothing: plot these saved reports side by side (p99 and finished/s) to --plot")
    parser.set_defaults(func=run_latency)


def run_latency(args: argparse.Namespace) -> int:
    configure_logging("warning")
    if args.compare:
        if not args.plot:
            raise SystemExit("--compare needs --plot (where to write the picture)")
        reports = {label: json.loads(Path(path).read_text())
                   for label, _, path in (item.rpartition("=") for item in args.compare)}
        plot_compare(reports, Path(args.plot))
        return 0
    rates = sorted(float(rate) for rate in args.rates.split(","))
    report: dict[str, Any] = {"machine": machine(), "broker": args.bootstrap or "embedded Tansu",
                              "classifier": _classifier_name(args), "seconds_per_rate": args.seconds,
                              "serve_flags": args.serve_flags,  # and the NOTIF_* settings the worker inherits:
                              "settings": inherited_settings()}
    print(f"machine: {report['machine']}", file=sys.stderr)
    with broker_address(args.bootstrap) as bootstrap:
        report |= asyncio.run(bench_latency(bootstrap, rates, seconds=args.seconds, idempotent=args.idempotent,
                                            serve_args=_serve_args(args), half_load=args.half_load,
                                            ready_timeout_s=args.ready_timeout))
    if args.classifier_json:
        report |= ratio_to_classifier(report, json.loads(Path(args.classifier_json).read_text()),
                                      args.classifier_batch)
    print_latency(report)
    write_outputs(report, args, plot_latency)
    return 0


def inherited_settings() -> dict[str, str]:
    """The NOTIF_* variables of this environment (the worker subprocess inherits them), secrets left out."""
    secret = {f"NOTIF_{name.upper()}" for name, field in Settings.model_fields.items()
              if "SecretStr" in str(field.annotation)}
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("NOTIF_") and k not in secret}


def _classifier_name(args: argparse.Namespace) -> str:
    if args.model:
        return f"model {args.model}"
    return f"instant, {args.instant_delay_ms:g} ms per batch"


def _serve_args(args: argparse.Namespace) -> list[str]:
    extra = shlex.split(args.serve_flags)
    if not args.model:
        return ["--instant-classifier", "--instant-delay-ms", str(args.instant_delay_ms), *extra]
    model = args.model
    if model in ("tiny", "0.6b"):
        from worker.dev.models import cached_random_qwen3

        model = str(cached_random_qwen3(model))
        if args.model == "tiny":
            extra = ["--quantization", "none", "--device", "cpu", *extra]
    if args.lora:
        from worker.bench.classifier import random_adapter

        extra = ["--adapter", random_adapter(model), *extra]
    return ["--model", model, *extra]


def ratio_to_classifier(report: dict[str, Any], classifier: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """End-to-end throughput over the classifier's alone (NF4, constrained, the fast engine where measured)."""
    rows = [r for r in classifier["rows"] if r["variant"] == "nf4" and r["mode"] == "constrained"
            and r["batch_size"] == batch_size]
    best = max(rows, key=lambda r: r.get("engine") == "fast", default=None)
    sustained = report.get("max_sustained_per_s")
    if best is None or not sustained:
        return {"ratio_to_classifier": None}
    return {"classifier_items_per_s": best["items_per_s"], "classifier_engine": best.get("engine", "reference"),
            "classifier_batch_size": batch_size, "ratio_to_classifier": round(sustained / best["items_per_s"], 3)}


async def bench_latency(bootstrap: str, rates: Sequence[float], *, seconds: float, idempotent: bool,
                        serve_args: list[str], half_load: bool = False,
                        ready_timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """Offer each rate in turn to one worker subprocess; stop after the first rate that saturates it.

    The most sustained rate is the highest rate sent in a phase that did not saturate (the worker kept up); with
    `half_load`, one more phase offers half of it (the latency a worker sized for twice its load gives).
    """
    suffix = uuid.uuid4().hex[:10]
    topics = {"input": f"lat-raw-{suffix}", "output": f"lat-out-{suffix}", "dlq": f"lat-dlq-{suffix}"}
    await create_topics_async(bootstrap, list(topics.values()), PARTITIONS)
    env = {"NOTIF_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "NOTIF_INPUT_TOPIC": topics["input"],
           "NOTIF_OUTPUT_TOPIC": topics["output"], "NOTIF_DLQ_TOPIC": topics["dlq"],
           "NOTIF_GROUP_ID": f"lat-{suffix}", "NOTIF_PRODUCER_IDEMPOTENCE": str(idempotent).lower()}
    messages = bench_messages(2_000)
    phases: list[dict[str, Any]] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=idempotent, linger_ms=1)
    await producer.start()
    try:
        with worker_subprocess(env, serve_args) as worker:
            await worker.wait_ready(ready_timeout_s)
            total = await warm_up(producer, topics["input"], messages, worker)
            for rate in rates:
                phase = await run_phase(producer, topics["input"], messages, worker, rate=rate, seconds=seconds,
                                        sent_before=total)
                total += phase["sent"]
                phases.append(phase)
                print(f"  {rate:7.0f} msgs/s offered: p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms, "
                      f"lag {phase['lag_slope_per_s']:+.0f}/s", file=sys.stderr, flush=True)
                if phase["saturated"]:
                    break
            sustained = max((p["sent_per_s"] for p in phases if not p["saturated"]), default=None)
            half = None
            if half_load and sustained:
                half = await run_phase(producer, topics["input"], messages, worker, rate=sustained / 2,
                                       seconds=seconds, sent_before=total)
                print(f"  half load {sustained / 2:7.0f} msgs/s: p50 {half['p50_ms']} ms, p99 {half['p99_ms']} ms",
                      file=sys.stderr, flush=True)
    finally:
        await producer.stop()
    saturated = [phase["rate"] for phase in phases if phase["saturated"]]
    return {"phases": phases, "saturation_rate": saturated[0] if saturated else None,
            "max_done_per_s": max(phase["done_per_s"] for phase in phases), "max_sustained_per_s": sustained,
            "half_load": half}


async def warm_up(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message],
                  worker: WorkerSubprocess) -> int:
    """Send a few messages and wait for their results (connections, caches); returns how many were sent."""
    for key, value in messages[:WARMUP_MESSAGES]:
        await producer.send(topic, key=key, value=value)
    await producer.flush()
    await drain(worker, WARMUP_MESSAGES, timeout_s=READY_TIMEOUT_S)
    return WARMUP_MESSAGES


async def run_phase(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message], worker: WorkerSubprocess,
                    *, rate: float, seconds: float, sent_before: int) -> dict[str, Any]:
    """Offer `rate` msgs/s for `seconds`, then wait for the backlog to clear; the phase's figures."""
    before = await worker.scrape()
    feed = Feed()
    sampler = asyncio.create_task(sample_lag(worker, feed, sent_before))
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (elapsed := loop.time() - start) < seconds:
        for _ in range(int(elapsed * rate) - feed.sent):
            key, value = messages[(sent_before + feed.sent) % len(messages)]
            await producer.send(topic, key=key, value=value)
            feed.sent += 1
        await asyncio.sleep(TICK_S)
    elapsed = loop.time() - start
    sampler.cancel()
    at_end = await worker.scrape()
    await producer.flush()
    drain_s = await drain(worker, sent_before + feed.sent, timeout_s=max(10.0, 3 * seconds))
    after = await worker.scrape()
    latencies = subtract(after.buckets, before.buckets)
    slope = lag_slope(feed.samples)
    return {
        "rate": rate, "sent": feed.sent, "sent_per_s": round(feed.sent / elapsed, 1),
        "done_per_s": round((at_end.done - before.done) / elapsed, 1),
        "lag_slope_per_s": round(slope, 1), "lag_max": max((lag for _, lag in feed.samples), default=0),
        "saturated": slope > GROWTH_FRACTION * rate, "drain_s": drain_s,
        "latency_count": int(latencies[-1][1]) if latencies else 0,
        **{f"p{q}_ms": _ms(quantile(q / 100, latencies)) for q in (50, 95, 99)},
    }


async def sample_lag(worker: WorkerSubprocess, feed: Feed, sent_before: int) -> None:
    """Every SAMPLE_INTERVAL_S: messages sent so far minus those the worker has finished."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        scrape = await worker.scrape()
        feed.samples.append((loop.time() - start, sent_before + feed.sent - scrape.done))
        await asyncio.sleep(SAMPLE_INTERVAL_S)


async def drain(worker: WorkerSubprocess, total: int, *, timeout_s: float) -> float | None:
    """Seconds until the worker has finished `total` messages; None if it did not within timeout_s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (await worker.scrape()).done < total:
        if loop.time() - start > timeout_s:
            return None
        await asyncio.sleep(0.05)
    return round(loop.time() - start, 3)


def parse_metrics(text: str) -> Scrape:
    """Finished messages (results + dead letters) and the end-to-end latency buckets of a /metrics page."""
    done = 0.0
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name in DONE_METRICS:
            done += sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
        elif family.name == LATENCY_METRIC:
            buckets = sorted((float(sample.labels["le"]), sample.value) for sample in family.samples
                             if sample.name.endswith("_bucket"))
    return Scrape(done=done, buckets=buckets)


def subtract(after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Bucket counts of what was observed between two scrapes."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets, linear inside a bucket (as PromQL's histogram_quantile).

    A quantile in the +Inf bucket is reported as the highest finite bound; None without observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def lag_slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares growth of the lag (messages per second) over the phase, its first quarter left out."""
    if len(samples) < 2:
        return 0.0
    skip = samples[-1][0] / 4
    kept = [sample for sample in samples if sample[0] >= skip]
    if len(kept) < 2:
        kept = list(samples)
    times, lags = zip(*kept, strict=True)
    return float(statistics.linear_regression(times, lags).slope)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class WorkerSubprocess:
    """`python -m worker serve` with its metrics port on 127.0.0.1, logging warnings to a temporary file."""

    def __init__(self, env: dict[str, str], serve_args: list[str]) -> None:
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log")  # noqa: SIM115
        full_env = {**os.environ, **env, "NOTIF_METRICS_PORT": str(self.port), "NOTIF_METRICS_HOST": "127.0.0.1",
                    "NOTIF_LOG_FORMAT": "json", "NOTIF_LOG_LEVEL": "warning",
                    "PYTHONFAULTHANDLER": "1"}  # a worker that hangs or dies leaves every stack in its log
        self.process = subprocess.Popen([sys.executable, "-m", "worker", "serve", *serve_args], env=full_env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (await asyncio.to_thread(self.get, "/readyz"))[0] != 200:
            if self.process.poll() is not None or loop.time() > deadline:
                raise RuntimeError(f"the worker did not become ready: {self.log_tail()}")
            await asyncio.sleep(0.2)

    async def scrape(self) -> Scrape:
        status, text = await asyncio.to_thread(self.get, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}: {self.log_tail()}")
        return parse_metrics(text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.returncode == EXIT_HUNG:  # its stop overran the deadline: the stacks are in its log
            print(f"bench: the worker's stop overran its deadline (exit {EXIT_HUNG}); its log ends:\n"
                  f"{self.log_tail(20000)}", file=sys.stderr)
        self._log.close()

    def log_tail(self, size: int = 3000) -> str:
        with open(self._log.name, "rb") as handle:
            return handle.read()[-size:].decode("utf-8", "replace")


@contextmanager
def worker_subprocess(env: dict[str, str], serve_args: list[str]) -> Iterator[WorkerSubprocess]:
    worker = WorkerSubprocess(env, serve_args)
    try:
        yield worker
    finally:
        worker.stop()


def print_latency(report: dict[str, Any]) -> None:
    print(f"machine: CPU {report['machine']['cpu']}, GPU {report['machine']['gpu']}; broker {report['broker']}; "
          f"classifier {report['classifier']}; {report['seconds_per_rate']:g} s per rate")
    header = ("offered/s", "sent/s", "done/s", "p50 ms", "p95 ms", "p99 ms", "lag growth/s", "max lag", "saturated")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for p in report["phases"]:
        saturated = "yes" if p["saturated"] else "no"
        print(f"| {p['rate']:.0f} | {p['sent_per_s']:.0f} | {p['done_per_s']:.0f} | {p['p50_ms']} | {p['p95_ms']} | "
              f"{p['p99_ms']} | {p['lag_slope_per_s']:+.0f} | {p['lag_max']:.0f} | {saturated} |")
    saturation = report["saturation_rate"]
    print(f"saturation: {'none up to the highest rate' if saturation is None else f'{saturation:.0f} msgs/s'}; "
          f"most finished per second: {report['max_done_per_s']:.0f}; most sustained: {report['max_sustained_per_s']}")
    if report.get("half_load"):
        half = report["half_load"]
        print(f"half load ({half['rate']:.0f} msgs/s): p50 {half['p50_ms']} ms, p99 {half['p99_ms']} ms")
    if report.get("ratio_to_classifier") is not None:
        print(f"ratio to the classifier alone (nf4, b={report['classifier_batch_size']}, "
              f"{report['classifier_engine']}): {report['ratio_to_classifier']}")


def plot_latency(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = report["phases"]
    rates = [p["rate"] for p in phases]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        left.plot(rates, [p[f"{q}_ms"] for p in phases], style, label=q)
    left.set_yscale("log")
    left.set_xlabel("offered messages / s")
    left.set_ylabel("end-to-end latency, ms (worker histogram)")
    left.legend()
    right.plot(rates, [p["done_per_s"] for p in phases], "o-", label="finished / s")
    right.plot(rates, rates, ":", color="gray", label="offered")
    if report["saturation_rate"] is not None:
        right.axvline(report["saturation_rate"], color="red", alpha=0.4, label="lag grows")
    right.set_xlabel("offered messages / s")
    right.set_ylabel("messages / s")
    right.legend()
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(rates, [f"{rate:g}" for rate in rates])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{report['classifier']}; {report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_compare(reports: dict[str, dict[str, Any]], path: Path) -> None:
    """Saved `bench latency` reports side by side: p99 latency and finished/s against the offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rates: set[float] = set()
    for label, report in reports.items():
        phases = report["phases"]
        offered = [p["rate"] for p in phases]
        rates.update(offered)
        left.plot(offered, [p["p99_ms"] for p in phases], "o-", label=label)
        right.plot(offered, [p["done_per_s"] for p in phases], "o-", label=label)
    right.plot(sorted(rates), sorted(rates), ":", color="gray", label="offered")
    left.set_yscale("log")
    left.set_ylabel("end-to-end p99, ms (worker histogram)")
    right.set_ylabel("finished messages / s")
    for ax in (left, right):
        ax.set_xlabel("offered messages / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    first = next(iter(reports.values()))
    fig.suptitle(f"{first['classifier']}; {first['machine']['cpu']}, GPU {first['machine']['gpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
