"""The benchmarks: classifier, pipeline and latency, with what they share in worker/bench/common.py."""
