"""Kafka's compression codecs: every one must round-trip here before the worker consumes or produces a record.

aiokafka reads and writes gzip with the standard library and snappy, lz4 and zstd with `cramjam` (its own
extras, ``aiokafka[lz4,snappy,zstd]``). Without it, a producer's ``compression.type`` the worker cannot read
would stop every partition at run time; so `require_codecs` refuses to start instead, naming what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from aiokafka import codec

from worker.stream.kafka.errors import KafkaConfigError

Codec = Literal["gzip", "snappy", "lz4", "zstd"]
CODECS: tuple[Codec, ...] = ("gzip", "snappy", "lz4", "zstd")
FIX = "install the codec library: pip install 'aiokafka[lz4,snappy,zstd]' (it brings cramjam)"
SAMPLE = b'{"id": "codec-check", "title": "Build failed", "body": "main is red"}' * 8

_FUNCTIONS: dict[str, tuple[Callable[[], bool], Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": (codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
    "snappy": (codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
    "lz4": (codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
    "zstd": (codec.has_zstd, codec.zstd_encode, codec.zstd_decode),
}


class CodecMissing(KafkaConfigError):
    """A compression codec the worker may meet on the input cannot be read or written here."""


def check_codecs() -> dict[str, str | None]:
    """Each codec's problem (None: it round-trips a sample through aiokafka's own functions)."""
    problems: dict[str, str | None] = {}
    for name, (available, encode, decode) in _FUNCTIONS.items():
        if not available():
            problems[name] = "the codec library (cramjam) is not installed"
            continue
        try:
            problems[name] = None if decode(encode(SAMPLE)) == SAMPLE else "a sample did not round-trip"
        except Exception as exc:  # any failure of the library is the codec's problem, reported by name
            problems[name] = f"{type(exc).__name__}: {exc}"
    return problems


def require_codecs() -> None:
    """Raise CodecMissing, naming each codec that does not round-trip and the fix."""
    failing = {name: problem for name, problem in check_codecs().items() if problem is not None}
    if failing:
        named = "; ".join(f"{name}: {problem}" for name, problem in failing.items())
        raise CodecMissing(f"Kafka compression codecs unusable ({named}); {FIX}")
