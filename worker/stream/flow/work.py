"""What travels between the stream's parts: one consumed record (Work) and one message to publish for it (Delivery)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord

from worker.contract import Notification
from worker.stream.flow.offsets import PartitionOffsets


@dataclass(eq=False, slots=True)
class Work:
    """One consumed record on its way through the worker."""

    record: ConsumerRecord[bytes, bytes]
    state: PartitionOffsets
    notification: Notification | None = None
    tokens: int = 0
    source: bytes | str | None = None  # NOTIF_OUTPUT_FORMAT=enriched: the input's JSON object as received, or text
    pending: int = 1  # publications still unacknowledged: the offset is done when the last one is (review)


@dataclass(eq=False, slots=True)
class Delivery:
    """A result or dead letter to publish for one Work item, and what to count once the broker has it."""

    work: Work
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    counter: Any  # the labelled Prometheus counter child that counts it (classifications or dead letters)
    input_ms: int | None = None  # a result's input timestamp: its end-to-end latency is observed at the ack
    kind: str = "result"  # result, dead_letter or value_omitted (worker/stream/flow/publish_policy.py)
