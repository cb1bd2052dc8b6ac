"""Broker fixtures: one embedded Tansu broker for the session, or NOTIF_TEST_BOOTSTRAP (e.g. Redpanda);
a second embedded broker behind a fault-injecting proxy."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.integration.fault_proxy import FaultProxy
from tests.integration.kafka_helpers import Topics
from worker.dev.broker import EmbeddedBroker, create_topics_async, free_port

EXTERNAL_BOOTSTRAP = os.environ.get("NOTIF_TEST_BOOTSTRAP", "")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The bootstrap address of the broker the suite talks to."""
    if EXTERNAL_BOOTSTRAP:
        yield EXTERNAL_BOOTSTRAP
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture
def make_topics(broker: str) -> Callable[..., Awaitable[Topics]]:
    """Create uniquely named input/output/dead-letter topics (and a group name) for one test."""

    async def make(partitions: int = 3) -> Topics:
        suffix = uuid.uuid4().hex[:10]
        topics = Topics(f"raw-{suffix}", f"classified-{suffix}", f"dlq-{suffix}", f"group-{suffix}")
        await create_topics_async(broker, [topics.input, topics.output, topics.dlq], partitions)
        return topics

    return make


@dataclass(frozen=True)
class ProxiedBroker:
    """A broker of its own that advertises ``proxy_port``: every client connection goes through the proxy."""

    direct: str  # the broker's own listener (only for bootstrapping; metadata points at the proxy)
    proxy_port: int


@pytest.fixture(scope="session")
def proxied_broker() -> Iterator[ProxiedBroker]:
    if EXTERNAL_BOOTSTRAP:
        pytest.skip("the fault proxy needs a broker that advertises the proxy's address (the embedded one)")
    proxy_port = free_port()
    with EmbeddedBroker(advertised=f"127.0.0.1:{proxy_port}") as embedded:
        yield ProxiedBroker(embedded.bootstrap, proxy_port)


@pytest.fixture
async def fault_proxy(proxied_broker: ProxiedBroker) -> AsyncIterator[FaultProxy]:
    """The proxy in front of ``proxied_broker``, on this test's event loop; healed and closed after it."""
    upstream = int(proxied_broker.direct.rsplit(":", 1)[1])
    proxy = await FaultProxy(upstream, port=proxied_broker.proxy_port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
def make_proxied_topics(fault_proxy: FaultProxy) -> Callable[..., Awaitable[Topics]]:
    """Like make_topics, on the proxied broker (created through the proxy)."""

    async def make(partitions: int = 2) -> Topics:
        suffix = uuid.uuid4().hex[:10]
        topics = Topics(f"raw-{suffix}", f"classified-{suffix}", f"dlq-{suffix}", f"group-{suffix}")
        await create_topics_async(fault_proxy.address, [topics.input, topics.output, topics.dlq], partitions)
        return topics

    return make
