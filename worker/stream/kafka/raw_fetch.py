"""The one read past the consumer's decoding: a Fetch request for one partition, its record batches as stored.

Used only when the consumer cannot decode what it fetched (worker/stream/kafka/undecodable.py). A second
edge beside worker/stream/kafka/clients.py: its own small client, aiokafka's errors translated to BrokerUnavailable.
"""

from __future__ import annotations

from contextlib import suppress

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

from worker.settings import Settings
from worker.stream.kafka.errors import BrokerUnavailable
from worker.stream.kafka.options import FETCH_MAX_WAIT_MS, client_options

# aiokafka's max_partition_fetch_bytes default: the window in which the consumer met the bad record
RAW_FETCH_BYTES = 1024 * 1024


class RawFetcher:
    """Connects on first use (most workers never need it); ``close`` on the way out."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: AIOKafkaClient | None = None

    async def fetch(self, partition: TopicPartition, offset: int) -> bytes:
        """The partition's record batches from ``offset`` (b"" when none arrive within the fetch wait)."""
        try:
            if self._client is None:
                client = AIOKafkaClient(**client_options(self.settings))
                await client.bootstrap()
                self._client = client
            await self._client.force_metadata_update()
            leader = self._client.cluster.leader_for_partition(partition)
            if leader is None or leader < 0:
                raise BrokerUnavailable(f"no leader for {partition}")
            # Tansu answers a fetch with min_bytes 0 with nothing at all: wait for one byte, briefly
            response = await self._client.send(leader, FetchRequest(
                max_wait_time=FETCH_MAX_WAIT_MS, min_bytes=1, max_bytes=RAW_FETCH_BYTES, isolation_level=0,
                topics=[(partition.topic, [(partition.partition, offset, RAW_FETCH_BYTES)])]))
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"raw fetch of {partition} failed: {exc!r}") from exc
        for _, partitions in response.topics:
            for number, error_code, *_, records in partitions:
                if number == partition.partition:
                    if error_code:
                        raise BrokerUnavailable(f"raw fetch of {partition}: broker error code {error_code}")
                    return bytes(records or b"")
        return b""  # nothing there within the wait (some brokers leave the partition out of an empty answer)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with suppress(KafkaError, OSError):
                await client.close()
