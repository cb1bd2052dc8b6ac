"""Reading record batches without the client's decoding: bytes header keys, CRC reported, broken batches named."""

from __future__ import annotations

import pytest

from tests.integration.kafka_helpers import BAD_KEY_BYTES, BAD_KEY_MARK, build_batch
from worker.stream.kafka.raw_records import read_batch, read_batches

RECORDS = [(b"k0", b"v0", [("trace", b"t")]), (None, b"v1", []), (b"k2", None, [("a", b"1"), ("b", b"")])]


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip (the codec in the standard library)
def test_a_batch_reads_back_as_written(compression: int) -> None:
    batch = read_batch(build_batch(RECORDS, compression=compression))
    assert batch.crc_ok and batch.error is None and not batch.control
    assert (batch.base_offset, batch.next_offset) == (0, 3)
    assert batch.records is not None
    assert [(r.offset, r.key, r.value, r.headers) for r in batch.records] == [
        (0, b"k0", b"v0", ((b"trace", b"t"),)), (1, None, b"v1", ()), (2, b"k2", None, ((b"a", b"1"), (b"b", b""))),
    ]
    assert all(r.timestamp > 0 and r.bad_header_key() is None for r in batch.records)


def test_a_header_key_that_is_not_utf8_is_kept_as_bytes() -> None:
    batch = read_batch(build_batch([(b"k", b"v", [("ok", b"1"), (BAD_KEY_MARK, b"x")]), (b"k2", b"v2", [])]))
    assert batch.crc_ok and batch.records is not None
    assert batch.records[0].headers[1] == (BAD_KEY_BYTES, b"x")
    assert [r.bad_header_key() for r in batch.records] == [1, None]


def test_a_wrong_crc_is_reported_and_the_records_still_read() -> None:
    batch = read_batch(build_batch(RECORDS, corrupt_crc=True))
    assert not batch.crc_ok and batch.records is not None and len(batch.records) == 3


def test_records_that_do_not_parse_give_no_records_and_say_why() -> None:
    batch = read_batch(build_batch(RECORDS, break_records=True))
    assert batch.crc_ok and batch.records is None
    assert batch.error is not None and "overruns" in batch.error
    assert batch.next_offset == 3  # the header still says where the batch ends


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_a_batch_of_garbage_under_a_codec_gives_a_stand_in_per_offset_the_first_holding_the_batch(codec: int) -> None:
    raw = build_batch(RECORDS, claim_codec=codec)
    batch = read_batch(raw)
    assert batch.garbage and batch.crc_ok and batch.codec == codec and batch.records is not None
    assert [record.offset for record in batch.records] == list(range(len(RECORDS)))
    assert batch.records[0].value == raw and all(record.value is None for record in batch.records[1:])
    assert batch.error is not None and "does not decompress" in batch.error


def test_a_batch_under_a_codec_no_client_knows_gives_no_records() -> None:
    batch = read_batch(build_batch(RECORDS, claim_codec=7))
    assert batch.records is None and not batch.garbage and batch.error is not None and "codec 7" in batch.error


def test_a_record_set_splits_into_batches_and_a_cut_off_tail_is_left_out() -> None:
    first, second = build_batch(RECORDS), build_batch([(b"x", b"y", [])])
    data = first + second
    assert [b.base_offset for b in read_batches(data)] == [0, 0]
    assert len(read_batches(data[:-5])) == 1
    assert read_batches(b"") == [] and read_batches(b"\x00" * 7) == []
