"""Kafka record batches (message format v2) read from raw fetch bytes, without the client's decoding (pure).

aiokafka decodes header keys as UTF-8 and checks each batch's CRC while it iterates a fetch; a record
that fails either stops the whole iteration. This reader keeps header keys as bytes and reports the
CRC instead of refusing the batch, so the worker can say exactly which records are bad and keep the
rest (worker/stream/kafka/undecodable.py). Layout: https://kafka.apache.org/documentation/#recordbatch
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.util import decode_varint

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
# maxTimestamp, producerId, producerEpoch, baseSequence, record count
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH_END = 12  # baseOffset and batchLength: batchLength counts the bytes after them
_CONTROL_BIT = 0x20
_LOG_APPEND_TIME_BIT = 0x08
_DECOMPRESS: dict[int, tuple[str, Callable[[bytes], bytes]]] = {
    1: ("gzip", gzip_decode), 2: ("snappy", snappy_decode), 3: ("lz4", lz4_decode), 4: ("zstd", zstd_decode),
}


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as stored: header keys are bytes (Kafka says UTF-8; not every producer agrees)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[bytes, bytes | None], ...]

    def bad_header_key(self) -> int | None:
        """The index of the first header whose key is not UTF-8, or None."""
        for index, (name, _) in enumerate(self.headers):
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                return index
        return None


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One record batch: its offsets, whether its CRC holds, and its records (None when they cannot be read).

    ``garbage``: the batch names a codec whose payload does not decompress; its records are then stand-ins, one
    per offset, the first holding the batch's bytes as stored (to be dead-lettered: nothing sent is lost).
    """

    base_offset: int
    next_offset: int
    crc_ok: bool
    control: bool
    records: tuple[RawRecord, ...] | None
    error: str | None = None
    garbage: bool = False
    codec: int = 0  # the compression bits: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd


def read_batches(data: bytes) -> list[RawBatch]:
    """The complete batches of a fetch response's record set, in order (a cut-off last batch is left out)."""
    batches, pos = [], 0
    while pos + _LENGTH_END <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + _LENGTH_END + length
        if length < _HEADER.size - _LENGTH_END or end > len(data):
            break  # the broker cuts the last batch at the fetch size; it is fetched whole next time
        batches.append(read_batch(data[pos:end]))
        pos = end
    return batches


def read_batch(batch: bytes) -> RawBatch:
    """One batch; a magic other than 2 or records that do not parse give ``records=None`` and the error."""
    base_offset, _, _, magic, _, attributes, last_delta, base_time, max_time, *_, count = _HEADER.unpack_from(batch)
    next_offset = base_offset + last_delta + 1
    if magic != 2:
        return RawBatch(base_offset, base_offset + 1, False, False, None, f"message format v{magic} is not read here")
    crc_ok = bool(DefaultRecordBatch(batch).validate_crc())
    control = bool(attributes & _CONTROL_BIT)
    body = batch[_HEADER.size:]
    codec = _DECOMPRESS.get(attributes & 0x07)
    if codec is not None:
        try:
            body = codec[1](body)
        except Exception as exc:  # the codec's library refuses the payload: whatever it raises
            why = f"the {codec[0]} payload of the record batch at offsets {base_offset}..{next_offset - 1} does not " \
                  f"decompress ({type(exc).__name__}: {exc}"[:280] + "); the first offset's dead letter holds the batch"
            return RawBatch(base_offset, next_offset, crc_ok, control, _stand_ins(batch, base_offset, next_offset,
                                                                                  base_time), why, True, attributes & 7)
    try:
        if attributes & 0x07 and codec is None:
            raise KeyError(f"compression codec {attributes & 0x07}")
        log_append = bool(attributes & _LOG_APPEND_TIME_BIT)
        records = _read_records(body, count, base_offset, max_time if log_append else base_time, log_append)
    except Exception as exc:  # any malformed byte: a KeyError of a codec, an IndexError, a bad varint
        return RawBatch(base_offset, next_offset, crc_ok, control, None, f"{type(exc).__name__}: {exc}"[:300])
    return RawBatch(base_offset, next_offset, crc_ok, control, records, codec=attributes & 0x07)


def _stand_ins(batch: bytes, base_offset: int, next_offset: int, timestamp: int) -> tuple[RawRecord, ...]:
    """One record per offset of a batch that cannot be decompressed; the first carries the batch as stored."""
    return tuple(RawRecord(offset, timestamp, 0, None, batch if offset == base_offset else None, ())
                 for offset in range(base_offset, next_offset))


def _read_records(body: bytes, count: int, base_offset: int, base_time: int,
                  log_append: bool) -> tuple[RawRecord, ...]:
    records, pos = [], 0
    for _ in range(count):
        length, pos = decode_varint(body, pos)
        end = pos + length
        if length < 0 or end > len(body):
            raise ValueError(f"a record of {length} bytes at byte {pos} overruns the batch")
        pos += 1  # the record's attributes: unused
        time_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _read_bytes(body, pos)
        value, pos = _read_bytes(body, pos)
        header_count, pos = decode_varint(body, pos)
        headers = []
        for _ in range(header_count):
            name, pos = _read_bytes(body, pos)
            header_value, pos = _read_bytes(body, pos)
            headers.append((name or b"", header_value))
        if pos != end:
            raise ValueError(f"a record's fields end at byte {pos}, its length says {end}")
        timestamp = base_time if log_append else base_time + time_delta
        records.append(RawRecord(base_offset + offset_delta, timestamp, int(log_append), key, value, tuple(headers)))
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} bytes after the batch's {count} records")
    return tuple(records)


def _read_bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(body, pos)
    if length < 0:
        return None, pos
    if pos + length > len(body):
        raise ValueError(f"a field of {length} bytes at byte {pos} overruns the batch")
    return body[pos:pos + length], pos + length
