"""`notif-worker bench`: registers every benchmark (classifier, shadow, decode, pipeline, latency, compression)."""

from __future__ import annotations

from typing import Any

from worker.bench.classifier import register_classifier
from worker.bench.decode import register_decode
from worker.bench.shadow import register_shadow


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench",
                                   help="benchmarks (classifier, shadow, decode, pipeline, latency, compression)")
    inner = parser.add_subparsers(dest="bench", required=True)
    register_classifier(inner)
    register_shadow(inner)
    register_decode(inner)
    try:  # the broker benchmarks need the demo extra (aiokafka is always there; the embedded broker is not)
        from worker.bench.compression import register_compression
        from worker.bench.latency import register_latency
        from worker.bench.pipeline import register_pipeline
    except ImportError:
        return
    register_pipeline(inner)
    register_latency(inner)
    register_compression(inner)
