"""The shadow: a candidate adapter scores the batches the serving one just answered; results to the shadow topic.

Best effort by design. The shadow call is queued on the inference thread after the serving batch's
results went to the outbox, so it never delays them or their commits; its results are published
without retries and never touch an offset. Every answer is compared with the serving one
(notif_shadow_agreement_total{decision,agree}); a failure to score or publish is counted
(notif_shadow_failures_total{stage}) and logged, and the stream goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from worker.contract import ClassificationResult
from worker.observe.metrics import Metrics
from worker.protocol import ShadowClassifier
from worker.stream.flow.model_calls import InferenceThread, describe
from worker.stream.flow.records import propagated, result_key
from worker.stream.flow.work import Work
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import delivery_error

log = structlog.get_logger("worker.shadow")


class Shadow:
    """Scores served batches with the shadow adapter and publishes its answers, without blocking anything."""

    def __init__(self, topic: str, thread: InferenceThread, classifier: ShadowClassifier, kafka: KafkaClients,
                 metrics: Metrics, propagate: frozenset[str] = frozenset()) -> None:
        self.topic = topic
        self._propagate = propagate  # the input headers its records carry (NOTIF_PROPAGATE_HEADERS)
        self.thread = thread
        self.classifier = classifier
        self.kafka = kafka
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._sizes: dict[asyncio.Task[None], int] = {}  # notifications per running task
        self._unconfirmed: dict[asyncio.Future[Any], int] = {}  # record batches handed over: notifications in each
        agreement = metrics.shadow_agreement
        self._agree = {(decision, agree): agreement.labels(decision=decision, agree=str(agree).lower())
                       for decision in ("folder", "priority") for agree in (True, False)}

    def after(self, served: list[tuple[Work, ClassificationResult]]) -> None:
        """Queue the shadow scoring of a batch the serving adapter just answered (its results are in the outbox).

        Submitted at once, so the inference thread runs it right after the serving batch, before the next one.
        """
        if not served:
            return
        notifications = [work.notification for work, _ in served if work.notification is not None]
        scoring = self.thread.submit(lambda: self.classifier.classify_shadow(notifications))
        task = asyncio.create_task(self._score(served, scoring))
        self._tasks.add(task)
        self._sizes[task] = len(served)
        task.add_done_callback(self._forget)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    async def finish(self, timeout_s: float) -> None:
        """At shutdown: let the batches being scored, handed over and acknowledged finish within ``timeout_s``;
        each one still unfinished then (cancelled if running) is counted (stage ``shutdown``), never dropped
        silently: what the producer holds unacknowledged when the clients close would vanish without a word."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
            self._failed("shutdown", TimeoutError(f"unfinished after {timeout_s:.1f}s of the shutdown"),
                         self._sizes.get(task, 0))
        unconfirmed = set(self._unconfirmed)
        if unconfirmed and (left := deadline - loop.time()) > 0:
            _, unconfirmed = await asyncio.wait(unconfirmed, timeout=left)
        for future in unconfirmed:
            count = self._unconfirmed.pop(future, None)
            if count is not None:  # an acknowledgement that comes later is not counted again (_confirmed)
                self._failed("shutdown", TimeoutError(f"not acknowledged after {timeout_s:.1f}s of the shutdown"),
                             count)

    async def _score(self, served: list[tuple[Work, ClassificationResult]],
                     scoring: asyncio.Future[list[ClassificationResult]]) -> None:
        try:
            results = await scoring
            if len(results) != len(served):
                raise RuntimeError(f"{len(results)} shadow results for {len(served)} notifications")
        except Exception as exc:
            self._failed("score", exc, len(served))
            return
        messages: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        for (work, serving), shadow in zip(served, results, strict=True):
            assert work.notification is not None
            self._agree["folder", shadow.folder == serving.folder].inc()
            self._agree["priority", shadow.priority == serving.priority].inc()
            messages.append((result_key(work.record.key, work.notification), shadow.to_json_bytes(),
                             propagated(work.record.headers, self._propagate)))
        try:
            sent = await self.kafka.send_batches(self.topic, messages)
        except Exception as exc:  # best effort by design: whatever stops the shadow must not reach the stream
            self._failed("publish", exc, len(served))
            return
        for future, members in sent:
            self._unconfirmed[future] = len(members)
            future.add_done_callback(self._confirmed)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._sizes.pop(task, None)

    def _confirmed(self, future: asyncio.Future[Any]) -> None:
        count = self._unconfirmed.pop(future, None)
        if count is None:  # counted at the shutdown already
            return
        error = delivery_error(self.topic, future)
        if error is not None:
            self._failed("publish", error, count)

    def _failed(self, stage: str, error: BaseException, count: int) -> None:
        self.metrics.shadow_failures.labels(stage=stage).inc()
        log.warning("shadow_failed", stage=stage, error=describe(error), notifications=count,
                    note="serving is unaffected")
