"""The benchmarks: classifier, shadow, pipeline and latency, with what they share in worker/bench/common.py."""
