"""Every poison record through the broker: the worker stays up as the same process, each poison record is
dead-lettered with its reason (or, unreadable, stops its partition loudly), and everything after it is classified.

The records the producer API cannot write (a header key that is not UTF-8, a wrong CRC, records that do
not parse) go to the broker as raw record batches (kafka_helpers.produce_raw). Apache Kafka validates each
batch as it is produced (CRC, compression, record framing) and refuses these, so they run on the embedded
Tansu, which stores batches as sent: what a worker meets behind a broker that does not validate, a disk that
went bad, or a client library that reads differently from the broker.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kafka_helpers import (
    BAD_KEY_MARK,
    WorkerProcess,
    build_batch,
    committed,
    eventually,
    produce_raw,
    read_all,
    topic_maker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

TRACE = ("trace-id", b"t-1")


def valid(name: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return name.encode(), json.dumps({"id": name, "title": f"message {name}"}).encode(), [TRACE]


def deep_ignored_field() -> bytes:
    return b'{"id": "deep", "title": "x", "ignored": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"


async def test_every_poison_kind_is_dead_lettered_and_the_worker_goes_on(tansu: str, tmp_path: Path) -> None:
    broker = tansu
    topics = await topic_maker(broker, idempotent=False)(partitions=2)
    bad_key = (b"bk", json.dumps({"id": "bk", "title": "bad header key"}).encode(), [TRACE, (BAD_KEY_MARK, b"x")])
    base = await produce_raw(broker, topics.input, 0, [
        build_batch([valid("n0"), bad_key, valid("n1")]),  # offsets 0..2
        build_batch([valid("c0"), valid("c1")], corrupt_crc=True),  # 3..4
        build_batch([(b"deep1", b"[" * 60000, [TRACE]), (b"deep2", deep_ignored_field(), [TRACE]),
                     (b"k" * 5000, valid("bigkey")[1], [TRACE]),
                     (b"bighead", valid("bighead")[1], [TRACE, ("blob", b"h" * 40000)])]),  # 5..8
        build_batch([valid(f"n{i}") for i in range(2, 6)]),  # 9..12
    ])
    assert base == [0, 3, 5, 9]
    await produce_raw(broker, topics.input, 1, [build_batch([valid(f"p{i}") for i in range(10)])])
    ends = {0: 13, 1: 10}
    expected_dead = {1: "undecodable_record", 3: "undecodable_record", 4: "undecodable_record",
                     5: "too_deep", 6: "too_deep", 7: "too_large", 8: "too_large"}
    process = WorkerProcess({**topics.env(broker), "NOTIF_COMMIT_INTERVAL_MS": "100"}, tmp_path / "worker.log")
    process.start()
    try:
        pid = process.process.pid if process.process else None
        outputs = await read_all(broker, topics.output, at_least=16, timeout_s=60, quiet_s=1.0)
        dead = await read_all(broker, topics.dlq, at_least=len(expected_dead), timeout_s=20, quiet_s=1.0)

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == ends

        await eventually(all_committed, 20, f"every input offset committed ({ends})")
        assert process.alive and process.process is not None and process.process.pid == pid, process.log_tail()
        assert await process.status("/readyz") == 200
    finally:
        process.stop()
    ids = Counter(json.loads(record.value)["id"] for record in outputs)
    assert ids == Counter([f"n{i}" for i in range(6)] + [f"p{i}" for i in range(10)])  # each once
    from_partition_0 = {int(dict(r.headers)["notif.source.offset"]): r for r in dead
                        if dict(r.headers)["notif.source.partition"] == b"0"}
    assert len(dead) == len(from_partition_0) == len(expected_dead)
    assert {offset: dict(r.headers)["notif.error.reason"].decode() for offset, r in from_partition_0.items()} == (
        expected_dead)
    undecodable = from_partition_0[1]
    assert (undecodable.key, undecodable.value) == (bad_key[0], bad_key[1])  # the original bytes
    names = [name for name, _ in undecodable.headers]
    assert names[:2] == ["trace-id", "\\xff\\xfeBADKY\x01"]  # the source headers, the bad key escaped
    assert b"not UTF-8" in dict(undecodable.headers)["notif.error.message"]
    assert b"CRC" in dict(from_partition_0[3].headers)["notif.error.message"]
    assert from_partition_0[4].value == valid("c1")[1]
    text = process.log_path.read_text()
    assert "Traceback" not in text and "worker_failed" not in text


@pytest.mark.parametrize("spoil", [{"break_records": True}], ids=["broken"])
async def test_a_batch_that_cannot_be_read_stops_its_partition_loudly(
        spoil: dict[str, Any], tansu: str, tmp_path: Path) -> None:
    broker = tansu
    topics = await topic_maker(broker, idempotent=False)(partitions=2)
    await produce_raw(broker, topics.input, 0, [
        build_batch([valid("n0")]), build_batch([valid("x0"), valid("x1")], **spoil), build_batch([valid("after")]),
    ])
    await produce_raw(broker, topics.input, 1, [build_batch([valid(f"p{i}") for i in range(5)])])
    process = WorkerProcess({**topics.env(broker), "NOTIF_COMMIT_INTERVAL_MS": "100"}, tmp_path / "worker.log")
    process.start()
    try:
        outputs = await read_all(broker, topics.output, at_least=6, timeout_s=60, quiet_s=1.0)

        async def stopped() -> bool:
            return (await process.status("/readyz")) == 503

        await eventually(stopped, 20, "/readyz 503")
        _, reason = process.get("/readyz")
        assert process.alive, process.log_tail()
        _, metrics = process.get("/metrics")
        done = await committed(broker, topics.group, topics.input)
    finally:
        process.stop()
    assert sorted(json.loads(r.value)["id"] for r in outputs) == ["n0", *(f"p{i}" for i in range(5))]
    assert f"{topics.input}:0" in reason and "cannot be read" in reason, reason
    assert "notif_halted_partitions 1.0" in metrics
    assert done[0] == 1  # committed up to the unreadable batch, never past it
    assert [e for e in process.events() if e["event"] == "partition_halted"], process.log_tail()



@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
async def test_a_compressed_batch_of_garbage_is_dead_lettered_and_the_worker_goes_on(
        codec: int, tansu: str, tmp_path: Path) -> None:
    """A batch whose codec bits say gzip/snappy/lz4/zstd over bytes that are not: one undecodable_record dead
    letter per offset (the first holding the batch as stored), the partition goes on, the process stays up.
    Apache Kafka decompresses batches as they are produced and refuses such a one; brokers that store batches as
    sent (Tansu) hand it to consumers, so this runs on Tansu."""
    broker = tansu
    topics = await topic_maker(broker, idempotent=False)(partitions=1)
    garbage = build_batch([valid("x0"), valid("x1"), valid("x2")], claim_codec=codec)
    await produce_raw(broker, topics.input, 0, [build_batch([valid("n0")]), garbage, build_batch([valid("after")])])
    process = WorkerProcess({**topics.env(broker), "NOTIF_COMMIT_INTERVAL_MS": "100"}, tmp_path / "worker.log")
    process.start()
    try:
        outputs = await read_all(broker, topics.output, at_least=2, timeout_s=60, quiet_s=1.0)
        dead = await read_all(broker, topics.dlq, at_least=3, timeout_s=30, quiet_s=1.0)

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == {0: 5}

        await eventually(all_committed, 20, "every input offset committed")
        assert process.alive, process.log_tail()
        assert await process.status("/readyz") == 200
    finally:
        process.stop()
    assert sorted(json.loads(r.value)["id"] for r in outputs) == ["after", "n0"]
    by_offset = {int(dict(r.headers)["notif.source.offset"]): r for r in dead}
    assert sorted(by_offset) == [1, 2, 3]
    assert {dict(r.headers)["notif.error.reason"] for r in dead} == {b"undecodable_record"}
    stored = by_offset[1].value or b""  # nothing sent is lost: the batch as stored (the broker set its offset)
    assert len(stored) == len(garbage) and stored[21:] == garbage[21:]
    assert by_offset[2].value is None and by_offset[3].value is None
    assert b"does not decompress" in dict(by_offset[1].headers)["notif.error.message"]
    text = process.log_path.read_text()
    assert "Traceback" not in text and "worker_failed" not in text and "partition_halted" not in text
