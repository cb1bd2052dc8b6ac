"""Broker fixtures: the broker the suite proves the worker against, a second one behind a fault-injecting proxy.

``broker`` is Apache Kafka (the reference, worker/dev/apache_kafka.py) unless NOTIF_TEST_BROKER=tansu (the
embedded Tansu the demo runs on) or NOTIF_TEST_BOOTSTRAP names an external broker (e.g. Redpanda). Tests of
the demo use ``tansu`` whatever is chosen (the no-Docker first run needs no JVM); tests of what only Apache
Kafka has (transactions, ACLs, SASL) use ``apache_kafka``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.integration.fault_proxy import FaultProxy
from tests.integration.kafka_helpers import EXTERNAL_BOOTSTRAP, TEST_BROKER, Topics, topic_maker
from worker.dev.apache_kafka import ApacheKafka
from worker.dev.broker import EmbeddedBroker, create_topics_async, free_port


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[ApacheKafka]:
    """Apache Kafka for the session (fetched by Maven on first use; Java or Maven missing fails the run)."""
    with ApacheKafka() as kafka:
        yield kafka


@pytest.fixture(scope="session")
def tansu() -> Iterator[str]:
    """The embedded Tansu broker's bootstrap address (the demo's broker)."""
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> str:
    """The bootstrap address of the broker the suite talks to (NOTIF_TEST_BROKER, NOTIF_TEST_BOOTSTRAP)."""
    if EXTERNAL_BOOTSTRAP:
        return EXTERNAL_BOOTSTRAP
    if TEST_BROKER == "tansu":
        return str(request.getfixturevalue("tansu"))
    return str(request.getfixturevalue("apache_kafka").bootstrap)


@pytest.fixture
def make_topics(broker: str) -> Callable[..., Awaitable[Topics]]:
    """Topics on ``broker``; the worker's idempotent producer stays on except on Tansu, which lacks it."""
    return topic_maker(broker, idempotent=TEST_BROKER != "tansu" or bool(EXTERNAL_BOOTSTRAP))


@pytest.fixture
def make_kafka_topics(apache_kafka: ApacheKafka) -> Callable[..., Awaitable[Topics]]:
    """Topics on Apache Kafka, whatever NOTIF_TEST_BROKER says (transactions, ACLs, SASL)."""
    return topic_maker(apache_kafka.bootstrap, idempotent=True)


@dataclass(frozen=True)
class ProxiedBroker:
    """A broker of its own that advertises ``proxy_port``: every client connection goes through the proxy."""

    direct: str  # the broker's own listener (only for bootstrapping; metadata points at the proxy)
    proxy_port: int


@pytest.fixture(scope="session")
def proxied_broker() -> Iterator[ProxiedBroker]:
    if EXTERNAL_BOOTSTRAP:
        pytest.skip("the fault proxy needs a broker of the suite's own that advertises the proxy's address")
    proxy_port = free_port()
    if TEST_BROKER == "tansu":
        with EmbeddedBroker(advertised=f"127.0.0.1:{proxy_port}") as embedded:
            yield ProxiedBroker(embedded.bootstrap, proxy_port)
        return
    with ApacheKafka(advertised={"PLAINTEXT": f"127.0.0.1:{proxy_port}"}) as kafka:
        yield ProxiedBroker(kafka.bootstrap, proxy_port)


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
        topics = Topics(f"raw-{suffix}", f"classified-{suffix}", f"dlq-{suffix}", f"group-{suffix}",
                        idempotent=TEST_BROKER != "tansu")
        await create_topics_async(fault_proxy.address, [topics.input, topics.output, topics.dlq], partitions)
        return topics

    return make
