"""Exactly-once at the edge: one transactional producer per input partition, its transaction and its offsets.

aiokafka has no KIP-447 (a consumer group's generation carried in TxnOffsetCommit), so zombie fencing is
done the classic way (KIP-98): the transactional id names the INPUT partition,
``<NOTIF_TRANSACTIONAL_ID_PREFIX or group>-<topic>-<partition>``. Whoever owns the partition next opens a
producer with the same id; the coordinator then fences the previous one (its writes fail with
ProducerFenced) and aborts its open transaction, so a worker killed mid-transaction leaves nothing visible
to a read_committed consumer, and a worker that lost its partitions without knowing cannot commit for them.
The cost is one producer (and its connections) per owned input partition.

A transaction holds a partition's results, review records and dead letters and, at its commit, the input
position they cover (``send_offsets_to_transaction``): output and offsets become visible together, or not at all.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from worker.settings import Settings
from worker.stream.kafka.errors import BrokerUnavailable, TransactionFailed
from worker.stream.kafka.options import producer_options

log = structlog.get_logger("worker.transactions")


def transactional_id(settings: Settings, tp: TopicPartition) -> str:
    """The id that fences every earlier owner of this input partition."""
    prefix = settings.transactional_id_prefix or settings.group_id
    return f"{prefix}-{tp.topic}-{tp.partition}"


class PartitionTransactions:
    """The transactional producers of the input partitions this worker owns, each inside an open transaction."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producers: dict[TopicPartition, asyncio.Future[AIOKafkaProducer]] = {}

    async def producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The producer whose transaction takes what is published for input partition ``tp`` (once it is open:
        the consumer may hand out the partition's first records while its producer still fences the last owner)."""
        opening = self._producers.get(tp)
        if opening is None:
            raise TransactionFailed(f"no transaction is open for {tp.topic}:{tp.partition}")
        return await asyncio.shield(opening)

    async def open(self, partitions: set[TopicPartition]) -> None:
        """Start a producer per newly owned partition (fencing its previous owner) and begin its transaction."""
        new = partitions - set(self._producers)
        loop = asyncio.get_running_loop()
        for tp in new:  # before the first await: a send for these waits for its producer instead of failing
            self._producers[tp] = loop.create_future()
        await asyncio.gather(*(self._open(tp) for tp in new))

    async def _open(self, tp: TopicPartition) -> None:
        opening = self._producers[tp]
        try:
            producer = await self._start(tp)
        except BaseException as exc:
            del self._producers[tp]
            if not opening.done():
                opening.set_exception(exc)
                opening.exception()  # read here: a send may never wait for it
            raise
        if not opening.done():
            opening.set_result(producer)

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        options: dict[str, Any] = {**producer_options(self.settings), "enable_idempotence": True,
                                   "transactional_id": transactional_id(self.settings, tp),
                                   "transaction_timeout_ms": self.settings.transaction_timeout_ms}
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()  # InitProducerId: fences and aborts the previous owner's transaction
            await producer.begin_transaction()
        except (KafkaError, OSError) as exc:
            with suppress(KafkaError, OSError):
                await producer.stop()
            raise BrokerUnavailable(f"no transactional producer for {tp.topic}:{tp.partition}: {exc!r}") from exc
        log.info("transaction_opened", partition=f"{tp.topic}:{tp.partition}", id=options["transactional_id"])
        return producer

    async def commit(self, tp: TopicPartition, position: int, *, timeout_s: float) -> None:
        """Add the input position to the partition's transaction, commit it, and begin the next one.

        Raises TransactionFailed when the transaction cannot be committed (fenced by a newer owner, or aborted
        by the broker): what it held is gone, and the input after the last committed position must be read again.
        """
        producer = await self.producer(tp)
        try:
            await asyncio.wait_for(self._commit(producer, tp, position), timeout_s)
        except TimeoutError as exc:
            raise TransactionFailed(f"the transaction of {tp.topic}:{tp.partition} did not commit in "
                                    f"{timeout_s}s") from exc
        except KafkaError as exc:
            raise TransactionFailed(f"the transaction of {tp.topic}:{tp.partition} failed: {exc!r}") from exc

    async def _commit(self, producer: AIOKafkaProducer, tp: TopicPartition, position: int) -> None:
        await producer.send_offsets_to_transaction({tp: position}, self.settings.group_id)
        await producer.commit_transaction()
        await producer.begin_transaction()

    async def close(self, partitions: set[TopicPartition]) -> None:
        """Stop the producers of partitions given up (their open transactions hold nothing committed)."""
        openings = [self._producers.pop(tp) for tp in partitions if tp in self._producers]
        for opening in openings:
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                with suppress(KafkaError, OSError):
                    await opening.result().stop()

    async def close_all(self) -> None:
        await self.close(set(self._producers))
