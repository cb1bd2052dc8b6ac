"""Records the client cannot decode: found by partition and offset, dead-lettered where readable, never looped on.

aiokafka raises while it iterates a fetch when a header key is not UTF-8 (UnicodeDecodeError) or a
batch fails its CRC or does not parse (CorruptRecordException). At that moment it has already taken
records it will never return (other partitions' and this one's up to the bad record) and, left alone,
it fetches the same batch again forever. So intake (worker/stream/flow/intake.py) rewinds every partition
to the offset after the last record it accepted and asks ``examine`` what lies there, read raw from
the broker (worker/stream/kafka/raw_fetch.py, worker/stream/kafka/raw_records.py):

- nothing wrong in the window: read on from the rewound position (Rewind);
- a bad batch: the records before it and in it come back as records to admit, the bad ones marked with
  why (dead-lettered as ``undecodable_record`` with their source headers), and the partition resumes
  after that batch: the client would decode the whole batch again, bad record included (Salvaged);
- a batch whose records cannot be read at all: the records before it are admitted, then the partition
  is stopped, loudly (Unreadable): not ready, with the reason, and never read past that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord, TopicPartition

from worker.stream.kafka.raw_fetch import RawFetcher
from worker.stream.kafka.raw_records import RawBatch, RawRecord, read_batches

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Rewind:
    """Nothing undecodable where the partition stands: fetch it again from ``position``."""

    position: int


@dataclass(frozen=True)
class Salvaged:
    """Records from the rewound position through the bad batch; ``undecodable``: offset -> why."""

    records: list[ConsumerRecord[bytes, bytes]]
    undecodable: dict[int, str] = field(default_factory=dict)
    resume_at: int = 0


@dataclass(frozen=True)
class Unreadable:
    """A batch whose records cannot be read: nothing to dead-letter, the partition cannot go past it.

    ``records``: the readable ones before it, to admit before the partition stops.
    """

    offset: int
    reason: str
    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)


Finding = Rewind | Salvaged | Unreadable


async def examine(fetcher: RawFetcher, partition: TopicPartition, position: int) -> Finding:
    """What stops the client in ``partition`` from ``position`` on (raises BrokerUnavailable)."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    for batch in read_batches(await fetcher.fetch(partition, position)):
        if batch.next_offset <= position or batch.control:
            continue  # before the position (a fetch starts at a batch boundary), or a transaction marker
        if batch.records is None:
            span = f"{batch.base_offset}..{batch.next_offset - 1}"
            return Unreadable(max(position, batch.base_offset),
                              f"the record batch at offsets {span} cannot be read: {batch.error}", records)
        undecodable: dict[int, str] = {}
        for record in batch.records:
            if record.offset < position:
                continue
            why = _why_undecodable(batch, record)
            if why is not None:
                undecodable[record.offset] = why
            records.append(consumer_record(partition, record))
        if undecodable:
            return Salvaged(records, undecodable, batch.next_offset)
    return Rewind(position)


def _why_undecodable(batch: RawBatch, record: RawRecord) -> str | None:
    if batch.garbage:
        return batch.error
    if not batch.crc_ok:
        return (f"the record batch at offsets {batch.base_offset}..{batch.next_offset - 1} fails its CRC check: "
                "key, value and headers are as stored, unverified")
    index = record.bad_header_key()
    if index is not None:
        return f"header {index} has a key that is not UTF-8: {record.headers[index][0]!r}"
    return None


def consumer_record(partition: TopicPartition, record: RawRecord) -> ConsumerRecord[bytes, bytes]:
    """The record as aiokafka would have given it; a header key that is not UTF-8 is shown with escapes."""
    headers: Headers = tuple((name.decode("utf-8", "backslashreplace"), value if value is not None else b"")
                             for name, value in record.headers)
    return ConsumerRecord(
        partition.topic, partition.partition, record.offset, record.timestamp, record.timestamp_type,
        record.key, record.value, None, len(record.key) if record.key is not None else -1,
        len(record.value) if record.value is not None else -1, headers,
    )
