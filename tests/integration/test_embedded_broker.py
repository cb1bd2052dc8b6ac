"""The embedded Tansu broker: start, topics (idempotent), produce/consume, stop."""

from __future__ import annotations

import pytest

from tests.integration.kafka_helpers import produce, read_all
from worker.dev.broker import EmbeddedBroker, create_topics_async, port_accepts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_start_topics_roundtrip_stop() -> None:
    with EmbeddedBroker() as broker:
        assert broker.running and port_accepts(broker.host, broker.port)
        await create_topics_async(broker.bootstrap, ["a", "b"], partitions=2)
        await create_topics_async(broker.bootstrap, ["a"], partitions=2)  # already there: fine
        await produce(broker.bootstrap, "a", [(b"k", b"v1"), (None, b"v2")])
        records = await read_all(broker.bootstrap, "a", at_least=2, timeout_s=10)
        assert sorted((r.value, r.key) for r in records) == [(b"v1", b"k"), (b"v2", None)]
    assert not broker.running
    assert not port_accepts(broker.host, broker.port)
