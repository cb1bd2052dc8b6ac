"""Broker fixtures: one embedded Tansu broker for the session, or NOTIF_TEST_BOOTSTRAP (e.g. Redpanda)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.integration.kafka_helpers import Topics
from worker.dev.broker import EmbeddedBroker, create_topics_async

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
