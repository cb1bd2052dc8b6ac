"""Faults between the worker and a real broker (tests/integration/fault_proxy.py): publish retry, commits that
fail, and at-least-once across an outage, read from the broker's own committed offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.fault_proxy import OFFSET_COMMIT, PRODUCE, FaultProxy
from tests.integration.kafka_helpers import (
    Sent,
    TopicReader,
    Topics,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from tests.integration.pipeline_helpers import RunningWorker, running_worker, settings_for
from worker.dev.instant import InstantClassifier

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


async def readyz(worker: RunningWorker, status: int, contains: str = "") -> None:
    async def check() -> bool:
        got, body = await worker.get("/readyz")
        return got == status and contains in body

    await eventually(check, 40, f"/readyz {status} saying {contains!r}")


async def test_publish_is_retried_visibly_until_the_broker_takes_it(
        fault_proxy: FaultProxy, make_proxied_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_proxied_topics()
    inputs = notification_messages(30)
    await produce(fault_proxy.address, topics.input, inputs, partitions=2)
    fault_proxy.cut_api_keys = {PRODUCE}  # every produce request cut before the broker sees it
    # The worker's own retries: a producer without idempotence gives a send up after publish_timeout_ms (the
    # idempotent one, the default, keeps retrying inside: the next test).
    settings = settings_for(topics, fault_proxy.address, publish_timeout_ms=1000, publish_stall_s=2,
                            retry_backoff_max_s=1, producer_idempotence=False)
    async with running_worker(settings) as worker:
        await readyz(worker, 503, f"publishing to {topics.output} has failed")
        assert worker.metric("notif_publish_retries_total", {"topic": topics.output}) > 0
        assert fault_proxy.cuts > 0
        assert await committed(fault_proxy.address, topics.group, topics.input) == {0: 0, 1: 0}
        fault_proxy.heal()
        outputs = await read_all(fault_proxy.address, topics.output, at_least=len(inputs), timeout_s=40)
        await readyz(worker, 200)
    # each once: cut before the broker
    assert sorted((r.key for r in outputs), key=repr) == sorted((key for key, _ in inputs), key=repr)


async def test_a_publish_the_producer_keeps_retrying_inside_is_visible_too(
        fault_proxy: FaultProxy, make_proxied_topics: Callable[..., Awaitable[Topics]]) -> None:
    # the idempotent producer (or a long NOTIF_PUBLISH_TIMEOUT_MS) retries inside aiokafka and never reports
    # a failure: the age of the oldest unacknowledged hand-over must show the stall anyway
    topics = await make_proxied_topics()
    inputs = notification_messages(10)
    await produce(fault_proxy.address, topics.input, inputs, partitions=2)
    fault_proxy.cut_api_keys = {PRODUCE}
    settings = settings_for(topics, fault_proxy.address, publish_timeout_ms=120_000, publish_stall_s=2)
    async with running_worker(settings) as worker:
        await readyz(worker, 503, f"publishing to {topics.output} has not been acknowledged")
        assert worker.metric("notif_publish_retries_total", {"topic": topics.output}) == 0
        fault_proxy.heal()
        outputs = await read_all(fault_proxy.address, topics.output, at_least=len(inputs), timeout_s=40)
        await readyz(worker, 200)
    assert sorted((r.key for r in outputs), key=repr) == sorted((key for key, _ in inputs), key=repr)


async def test_commits_that_keep_failing_make_the_worker_not_ready(
        fault_proxy: FaultProxy, make_proxied_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_proxied_topics()
    settings = settings_for(topics, fault_proxy.address, commit_timeout_s=1, commit_stall_s=2)
    async with running_worker(settings) as worker:
        first = await produce(fault_proxy.address, topics.input, notification_messages(10, "a"), partitions=2)
        await eventually(lambda: _committed_to(fault_proxy, topics, first), 40, "the first 10 committed")
        await readyz(worker, 200)
        assert fault_proxy.requests[OFFSET_COMMIT] > 0 and fault_proxy.requests[PRODUCE] > 0  # all via the proxy

        fault_proxy.cut_api_keys = {OFFSET_COMMIT}  # as a group ACL missing would: every commit fails
        second = await produce(fault_proxy.address, topics.input, notification_messages(10, "b"), partitions=2)
        await read_all(fault_proxy.address, topics.output, at_least=20, timeout_s=30)
        await readyz(worker, 503, "offset commits have failed")
        assert worker.metric("notif_commit_failing") == 1
        assert worker.metric("notif_commit_failures_total") >= 2
        assert await _committed_to(fault_proxy, topics, first)  # nothing committed meanwhile

        fault_proxy.heal()
        await eventually(lambda: _committed_to(fault_proxy, topics, first + second), 40, "all 20 committed")
        await readyz(worker, 200)
        assert worker.metric("notif_commit_failing") == 0


async def _committed_to(proxy: FaultProxy, topics: Topics, sent: list[Sent]) -> bool:
    ends = {p: 1 + max((s.offset for s in sent if s.partition == p), default=-1) for p in (0, 1)}
    return await committed(proxy.address, topics.group, topics.input) == ends


async def test_at_least_once_across_an_outage(fault_proxy: FaultProxy,
                                              make_proxied_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Cuts mid-produce and mid-commit, then a blackhole; every input ends with an output, and no commit
    ever passes an input whose output the broker does not have."""
    topics = await make_proxied_topics()
    inputs = notification_messages(300)
    sent = await produce(fault_proxy.address, topics.input, inputs, partitions=2)
    key_of = {(s.partition, s.offset): s.key for s in sent}
    settings = settings_for(topics, fault_proxy.address, max_batch_size=8, publish_timeout_ms=1000,
                            retry_backoff_max_s=0.5, commit_timeout_s=1)
    async with running_worker(settings, InstantClassifier(delay_s=0.02)), \
            TopicReader(fault_proxy.address, topics.output) as reader:

        async def check_prefix() -> bool:
            """The broker's committed offsets cover only inputs whose output is already there."""
            positions = await committed(fault_proxy.address, topics.group, topics.input)
            below = {key for (p, o), key in key_of.items() if o < positions[p]}

            async def outputs_there() -> bool:  # the reader may lag behind the broker; the broker has them
                await reader.poll()
                return below <= {r.key for r in reader.records}

            await eventually(outputs_there, 10, f"outputs of all inputs below the committed offsets {positions}")
            return all(positions[p] == 1 + max(o for q, o in key_of if q == p) for p in (0, 1))

        await reader.read_until(40, 40)
        fault_proxy.cut_api_keys = {PRODUCE, OFFSET_COMMIT}
        await asyncio.sleep(3)
        fault_proxy.blackhole()
        await asyncio.sleep(3)
        fault_proxy.heal()
        fault_proxy.cut_all()
        await eventually(check_prefix, 90, "every input committed", interval_s=0.5)
        await reader.settle(1.0)
        outputs = {r.key for r in reader.records}
    assert fault_proxy.cuts > 0
    assert outputs == {key for key, _ in inputs}  # every input has an output (duplicates allowed)
