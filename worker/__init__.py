"""notif-triage worker: classify notifications from Kafka with a 4-bit LoRA-adapted Qwen3."""

__version__ = "0.1.0"
