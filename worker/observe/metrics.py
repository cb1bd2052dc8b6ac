"""Prometheus metrics of the worker: defined here once, registered on a registry passed in.

Dashboards and alert rules depend on these names; deploy tests read them from a real registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from worker.envelopes.read import ENVELOPES

# About 1 ms to 30 s: an end-to-end latency covers both a warm batch and a stalled one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
REVIEW_REASONS = ("folder", "priority", "both", "unscored")  # which confidence was low (worker/stream/flow/review.py)


class Metrics:
    """All worker metrics, bound to one registry (tests use a fresh one each)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_consumed = Counter(
            "notif_messages_consumed", "Messages read from the input topic.", registry=registry
        )
        self.classifications = Counter(
            "notif_classifications", "Results published, by folder and priority.",
            ["folder", "priority"], registry=registry,
        )
        self.parse_failures = Counter(
            "notif_parse_failures", "Generated answers that failed strict JSON parsing (fell back to scoring).",
            registry=registry,
        )
        self.input_envelopes = Counter(
            "notif_input_envelopes", "Input records by the envelope they came in (flat, text, fcm_v1, cloudevents, "
            "..., invalid).", ["envelope"], registry=registry,
        )
        self.dead_letters = Counter(
            "notif_dead_letters", "Messages sent to the dead-letter topic, by reason.", ["reason"],
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            "notif_end_to_end_latency_seconds",
            "From the input message's Kafka timestamp to the broker's acknowledgement of its result.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.inference_latency = Histogram(
            "notif_inference_latency_seconds", "Model time of one batch.", buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "notif_batch_size", "Notifications per model call.", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "notif_batch_tokens", "Padded prompt tokens per model call.",
            buckets=(256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536), registry=registry,
        )
        self.consumer_lag = Gauge(
            "notif_consumer_lag", "Broker end offset minus the committed offset (asked each second, also while "
            "paused).", ["topic", "partition"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "notif_in_flight_messages", "Messages in flight: consumed, output not yet acknowledged.", registry=registry
        )
        self.queue_depth = Gauge(
            "notif_queue_depth", "Decoded notifications waiting for the model.", registry=registry
        )
        self.paused_partitions = Gauge(
            "notif_paused_partitions", "Partitions paused by backpressure.", registry=registry
        )
        self.assigned_partitions = Gauge(
            "notif_assigned_partitions", "Input partitions assigned to this worker.", registry=registry
        )
        self.commits = Counter("notif_commits", "Offset commits that succeeded.", registry=registry)
        self.commit_failures = Counter(
            "notif_commit_failures", "Offset commits that failed (retried later).", registry=registry
        )
        self.inference_errors = Counter(
            "notif_inference_errors", "Model calls that raised (the batch is split and retried).",
            registry=registry,
        )
        self.broker_errors = Counter(
            "notif_broker_errors", "Errors talking to the Kafka broker (retried with backoff).",
            registry=registry,
        )
        self.publish_retries = Counter(
            "notif_publish_retries", "Results and dead letters published again after a transient failure.",
            ["topic"], registry=registry,
        )
        self.authorization_denied = Counter(
            "notif_authorization_denied", "Operations the broker's ACLs denied this worker (retried until granted; "
            "/readyz names the kafka-acls line that grants it).",
            ["operation", "resource"], registry=registry,
        )
        self.halted_partitions = Gauge(
            "notif_halted_partitions", "Partitions stopped at an input that can be neither read nor published, "
            "not even as a value-less dead letter (/readyz names it).",
            registry=registry,
        )
        self.commit_failing = Gauge(
            "notif_commit_failing", "1 while offset commits have failed for longer than NOTIF_COMMIT_STALL_S.",
            registry=registry,
        )
        self.breaker_open = Gauge(
            "notif_breaker_open", "1 while the model's circuit breaker holds consumption (model calls fail).",
            registry=registry,
        )
        self.ready = Gauge("notif_ready", "1 when the worker is ready (model, partitions, broker).", registry=registry)
        self.model_info = Info("notif_model", "The model the worker serves.", registry=registry)
        self.engine_info = Gauge(
            "notif_engine_info", "1 for the scoring engine in use and why (fast: self_check_passed; reference: "
            "cpu_default, configured, unsupported_model, self_check_failed).", ["engine", "reason"], registry=registry,
        )
        # --- intake and membership (issue 11) ---------------------------------------------------------
        self.oldest_unacked_age = Gauge(
            "notif_oldest_unacked_age_seconds", "How long the oldest consumed record still without an acknowledged "
            "result or dead letter has waited (0 when none).", ["topic", "partition"], registry=registry,
        )

        # --- model lifecycle: review routing, adapter swaps, the shadow adapter ---------------------------
        self.reviews = Counter(
            "notif_review", "Results sent to the review topic, by which confidence was low.", ["reason"],
            registry=registry,
        )
        self.adapter_reloads = Counter(
            "notif_adapter_reloads", "Adapter reload attempts, by outcome (swapped, failed).", ["outcome"],
            registry=registry,
        )
        self.shadow_agreement = Counter(
            "notif_shadow_agreement", "Shadow answers compared with the serving ones, by decision and agreement.",
            ["decision", "agree"], registry=registry,
        )
        self.shadow_failures = Counter(
            "notif_shadow_failures", "Shadow batches that failed (scoring or publishing); serving is unaffected.",
            ["stage"], registry=registry,
        )
        # Every label value is known: children at 0 from the start, so rates and ratios exist before events.
        for reason in REVIEW_REASONS:
            self.reviews.labels(reason=reason)
        for outcome in ("swapped", "failed"):
            self.adapter_reloads.labels(outcome=outcome)
        for decision in ("folder", "priority"):
            for agree in ("true", "false"):
                self.shadow_agreement.labels(decision=decision, agree=agree)
        for envelope in ENVELOPES:
            self.input_envelopes.labels(envelope=envelope)
        for stage in ("score", "publish", "shutdown"):
            self.shadow_failures.labels(stage=stage)
        self._model_labels: dict[str, str] = {}

    def show_model(self, **labels: str) -> None:
        """Set (or update, e.g. after an adapter swap) the labels of notif_model_info."""
        self._model_labels.update(labels)
        self.model_info.info(dict(self._model_labels))
