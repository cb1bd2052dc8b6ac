"""Settings: one typed object built once at start-up from NOTIF_* environment variables and CLI flags.

Nothing reads the environment after start-up; the object is passed down explicitly. The variables are
declared in groups by concern (one class each, below); `Settings` is all of them at once, with the same flat
`NOTIF_*` names, and `settings_groups()` gives the README's and `notif-worker config --table`'s sections.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.envelopes.mapping import FieldMapping

CONFIG = SettingsConfigDict(env_prefix="NOTIF_", extra="ignore", frozen=True)



class KafkaSettings(BaseSettings):
    """Kafka connection and membership: where the brokers are, how to authenticate, which topic and group to consume."""

    model_config = CONFIG

    kafka_bootstrap_servers: str = Field("localhost:9092", description="Comma-separated broker addresses.")
    input_topic: str = Field("notifications.raw", description="Topic of raw notifications.")
    group_id: str = Field("notif-worker", description="Kafka consumer group; replicas share the partitions.")
    client_id: str = Field("notif-worker", description="Kafka client id (shows in broker logs and quotas).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (from a Secret, never logged).")
    sasl_oauthbearer_token_endpoint_url: str | None = Field(
        None, description="OAUTHBEARER: the identity provider's OAuth 2.0 token endpoint (Kafka's "
        "sasl.oauthbearer.token.endpoint.url); the worker gets its tokens there by the client-credentials grant and "
        "replaces each once 80% of its lifetime has passed (docs/DEPLOY.md)."
    )
    sasl_oauthbearer_client_id: str | None = Field(
        None, description="OAUTHBEARER: the client id (sasl.oauthbearer.client.credentials.client.id)."
    )
    sasl_oauthbearer_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: the client secret (sasl.oauthbearer.client.credentials.client.secret; from a "
        "Secret, never logged), sent with the client id by HTTP Basic authentication."
    )
    sasl_oauthbearer_scope: str | None = Field(
        None, description="OAUTHBEARER: the scope to ask for (sasl.oauthbearer.scope), space-separated; empty: none."
    )
    sasl_oauthbearer_audience: str | None = Field(
        None, description="OAUTHBEARER: an `audience` parameter of the token request, for identity providers that "
        "want one (Auth0, some Okta servers); empty: none."
    )
    ssl_cafile: str | None = Field(None, description="CA bundle for TLS.")
    ssl_certfile: str | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: str | None = Field(None, description="Client key for mutual TLS.")
    group_instance_id: str | None = Field(
        None, description="Static membership (KIP-345): a stable id per replica (a StatefulSet pod's name). A "
        "restart within the session timeout keeps its partitions without a rebalance (docs/DEPLOY.md says when)."
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed", description="Kafka isolation.level of the consumer: read_committed never classifies "
        "records a transactional producer aborted."
    )
    session_timeout_ms: int = Field(
        10000, ge=1000, description="Kafka session.timeout.ms: heartbeats missed this long cost membership."
    )
    heartbeat_interval_ms: int = Field(
        3000, ge=100, description="Kafka heartbeat.interval.ms (below a third of the session timeout)."
    )
    max_poll_interval_ms: int = Field(
        300000, ge=1000, description="Kafka max.poll.interval.ms; the worker polls even while paused or in a slow call."
    )
    retry_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between broker reconnects.")

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("NOTIF_HEARTBEAT_INTERVAL_MS must be below NOTIF_SESSION_TIMEOUT_MS (a third is usual)")
        return self

    @model_validator(mode="after")
    def _oauthbearer_needs_its_client(self) -> KafkaSettings:
        if not (self.security_protocol.startswith("SASL") and self.sasl_mechanism == "OAUTHBEARER"):
            return self
        missing = [name for name, value in (("TOKEN_ENDPOINT_URL", self.sasl_oauthbearer_token_endpoint_url),
                                            ("CLIENT_ID", self.sasl_oauthbearer_client_id),
                                            ("CLIENT_SECRET", self.sasl_oauthbearer_client_secret)) if not value]
        if missing:
            raise ValueError("NOTIF_SASL_MECHANISM=OAUTHBEARER needs " + " and ".join(
                f"NOTIF_SASL_OAUTHBEARER_{name}" for name in missing) + " (the client-credentials grant's)")
        url = self.sasl_oauthbearer_token_endpoint_url or ""
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL must be an http(s) URL, not {url!r}")
        return self


class IntakeSettings(BaseSettings):
    """Intake and batching: what a record may be, how many are in flight, and how they are batched for the model."""

    model_config = CONFIG

    max_message_bytes: int = Field(65536, ge=64, description="Larger messages are dead-lettered (`too_large`).")
    max_key_bytes: int = Field(4096, ge=16, description="Larger record keys are dead-lettered (`too_large`).")
    max_header_bytes: int = Field(
        32768, ge=64, description="Records whose header names and values add up to more go to the DLQ (`too_large`)."
    )
    input_fields: str | None = Field(
        None, description="A user's own envelope: a JSON object mapping notification fields (title, body, app, "
        "sender, id, timestamp) to JSON Pointers into the input object, e.g. `{\"title\": \"/payload/subject\", "
        "\"body\": \"/payload/text\"}`; tried before the known envelopes. Empty: detection only."
    )
    max_in_flight: int = Field(
        512, ge=1, description="Most messages in flight (consumed, output not yet acknowledged); at it, intake pauses."
    )
    max_batch_size: int = Field(64, ge=1, description="Most notifications in one model call.")
    max_wait_ms: int = Field(20, ge=0, description="How long a partial batch waits for more messages.")
    max_batch_tokens: int = Field(
        32768, ge=256, description="Token budget of one model call (padded length x rows)."
    )
    batches_in_flight: int = Field(
        2, ge=1, le=8, description="Batches launched on the model and not yet read back: at 2, the next full "
        "batch is prepared and queued while one computes (1: one batch at a time)."
    )


class ModelSettings(BaseSettings):
    """Model: which model and adapter, how they are loaded, and how answers are scored."""

    model_config = CONFIG

    model: str = Field("Qwen/Qwen3-0.6B", description="Base model: Hugging Face hub id or local directory.")
    adapter: str | None = Field(None, description="LoRA adapter: directory or hub id; empty for the bare model.")
    quantization: Literal["auto", "nf4", "none"] = Field(
        "auto", description="`nf4`: 4-bit NF4, double quant, bf16 compute (the reference). `none`: full weights. "
        "`auto`: nf4 on a GPU, none on a CPU.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights/compute dtype when not quantized; auto = bf16 on GPU, float32 on CPU."
    )
    merge_adapter: bool = Field(False, description="Merge the adapter into the weights (quantization=none only).")
    device: str = Field("auto", description="`auto` (CUDA if present), `cpu`, `cuda`, `cuda:1`, ...")
    decoding: Literal["constrained", "generate"] = Field(
        "constrained", description="`constrained`: score the 12 valid answers. `generate`: free greedy + JSON parse."
    )
    max_input_tokens: int = Field(
        384, ge=16, description="Token budget of the user message; longer bodies are truncated, never rejected."
    )
    max_new_tokens: int = Field(24, ge=8, description="Generation limit in `generate` mode.")
    engine: Literal["auto", "fast", "reference"] = Field(
        "auto", description="Constrained scoring by `fast` (dense weights: NF4 dequantized once, LoRA merged; one "
        "packed row per batch) or `reference` (the transformers model as loaded). auto = fast on CUDA, reference "
        "on the CPU; fast falls back to reference for a model it cannot run (not Qwen3)."
    )
    engine_cuda_graphs: bool = Field(
        True, description="CUDA only: the fast engine replays captured CUDA graphs for passes up to 2048 tokens."
    )


class OutputSettings(BaseSettings):
    """Output and commits: where results, dead letters and review records go; how publishes and commits retry."""

    model_config = CONFIG

    output_topic: str = Field("notifications.classified", description="Topic of classification results.")
    dlq_topic: str = Field("notifications.dlq", description="Dead-letter topic (original bytes + reason headers).")
    review_topic: str | None = Field(
        None, description="Topic for low-confidence results (the result plus its input); empty = off."
    )
    review_below: float = Field(
        0.6, ge=0.0, le=1.0, description="A folder or priority confidence below this goes to review."
    )
    producer_idempotence: bool = Field(
        True, description="Idempotent producer (set false for brokers without it, e.g. Tansu in tests)."
    )
    output_format: Literal["result", "enriched"] = Field(
        "result", description="`result`: the classification record. `enriched`: the input's own JSON object with "
        "the classification added under `notif_triage` (plain text wrapped as `{\"text\": ...}`), so a router "
        "needs no join."
    )
    propagate_headers: str = Field(
        "traceparent,tracestate,baggage", description="Input headers (comma-separated, any case) copied onto the "
        "result, review and shadow records; dead letters keep every input header. Empty: none."
    )
    output_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd", description="Compression of every record batch the worker produces (results, dead letters, review, "
        "shadow). zstd: as few bytes as gzip (7.8x fewer than none) for a tenth of the CPU gzip adds (+0.5 against "
        "+5.0 us per message; docs/PERFORMANCE.md, \"Output compression\"); consumers need zstd support (Kafka "
        "clients since 2.1, librdkafka; else snappy, the cheapest, or gzip)."
    )
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="`at_least_once`: commit the acknowledged prefix (a crash may publish some "
        "results twice). `exactly_once`: results, review records, dead letters and the input offsets in one "
        "Kafka transaction per input partition (read the output with isolation.level=read_committed)."
    )
    transactional_id_prefix: str | None = Field(
        None, description="exactly_once: transactional ids are `<prefix>-<input topic>-<partition>`; empty = the "
        "group id. Unique per pipeline: two pipelines sharing a prefix on one topic would fence each other."
    )
    transaction_timeout_ms: int = Field(
        60000, ge=1000, description="exactly_once: the broker aborts a transaction left open this long (a worker "
        "that died mid-transaction; its successor aborts it at once when it takes the partition)."
    )
    publish_timeout_ms: int = Field(
        30000, ge=1000, description="How long the producer tries one hand-over before the worker retries it."
    )
    publish_stall_s: float = Field(
        60.0, gt=0, description="/readyz fails while a result or dead letter has been retried for this long."
    )
    commit_interval_ms: int = Field(1000, ge=0, description="How often acknowledged offsets are committed.")
    commit_timeout_s: float = Field(10.0, gt=0, description="How long one offset commit may take.")
    commit_stall_s: float = Field(
        60.0, gt=0, description="/readyz fails (and notif_commit_failing is 1) once commits fail for this long."
    )


class LifecycleSettings(BaseSettings):
    """Lifecycle: stopping, the model's circuit breaker, adapter hot swap and the shadow adapter."""

    model_config = CONFIG

    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="SIGTERM: finish, publish and commit within this, then exit."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive batches the model fails entirely that open its circuit breaker."
    )
    breaker_retry_s: float = Field(10.0, gt=0, description="While the breaker is open: how often it retries.")
    breaker_unhealthy_s: float = Field(
        300.0, gt=0, description="/healthz fails once the breaker has been open this long (the pod restarts)."
    )
    adapter_poll_s: float = Field(
        0.0, ge=0.0, description="How often to check where NOTIF_ADAPTER points and swap when it moved; 0 = off."
    )
    shadow_adapter: str | None = Field(
        None, description="A candidate adapter scored on the same batches (results to NOTIF_SHADOW_TOPIC only)."
    )
    shadow_topic: str | None = Field(None, description="Topic of the shadow adapter's results.")


class ObserveSettings(BaseSettings):
    """HTTP, metrics and logs: the metrics and health endpoints and the log format."""

    model_config = CONFIG

    metrics_host: str = Field("0.0.0.0", description="Address of the metrics/health HTTP server.")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz.")
    liveness_timeout_s: float = Field(
        60.0, gt=0, description="/healthz fails when the loop made no progress for this long."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: console on a terminal, JSON otherwise."
    )


# The sections, in the order the README and `config --table` show them.
GROUPS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Model", ModelSettings),
    ("Kafka connection and membership", KafkaSettings),
    ("Intake and batching", IntakeSettings),
    ("Output and commits", OutputSettings),
    ("Lifecycle", LifecycleSettings),
    ("HTTP, metrics and logs", ObserveSettings),
)


class Settings(ObserveSettings, LifecycleSettings, OutputSettings, ModelSettings, IntakeSettings, KafkaSettings):
    """Every NOTIF_* variable. The README's configuration tables are generated from these descriptions."""

    model_config = CONFIG

    @field_validator("input_fields", mode="after")
    @classmethod
    def _input_fields_parse(cls, value: str | None) -> str | None:
        FieldMapping.parse(value)  # a FieldMappingError (a ValueError) names the field that does not parse
        return value

    @model_validator(mode="after")
    def _exactly_once_needs_idempotence(self) -> Settings:
        if self.delivery == "exactly_once" and not self.producer_idempotence:
            raise ValueError("NOTIF_DELIVERY=exactly_once needs NOTIF_PRODUCER_IDEMPOTENCE=true (transactions "
                             "are idempotent producers)")
        return self

    @model_validator(mode="after")
    def _shadow_needs_its_topic(self) -> Settings:
        if bool(self.shadow_adapter) != bool(self.shadow_topic):
            raise ValueError("NOTIF_SHADOW_ADAPTER and NOTIF_SHADOW_TOPIC go together: set both or neither")
        if self.shadow_adapter and not self.adapter:
            raise ValueError("NOTIF_SHADOW_ADAPTER needs a serving NOTIF_ADAPTER on the same base")
        if self.shadow_adapter and self.merge_adapter:
            raise ValueError("NOTIF_SHADOW_ADAPTER needs NOTIF_MERGE_ADAPTER=false (a merged base has one adapter)")
        return self

    @field_validator("adapter", "transactional_id_prefix", "input_fields", "group_instance_id", "sasl_username",
                     "sasl_oauthbearer_token_endpoint_url", "sasl_oauthbearer_client_id",
                     "sasl_oauthbearer_client_secret", "sasl_oauthbearer_scope", "sasl_oauthbearer_audience",
                     "ssl_cafile", "ssl_certfile", "ssl_keyfile", "review_topic", "shadow_adapter", "shadow_topic",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with CLI flags applied (None means: flag not given)."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return self.model_validate({**self.model_dump(), **given}) if given else self


def settings_groups() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each section's title and its (variable, default, meaning) rows, for the README and `notif-worker config`."""
    sections = []
    for title, group in GROUPS:
        rows = []
        for name, field in group.model_fields.items():
            default = "" if field.default is None else str(field.default)
            rows.append((f"NOTIF_{name.upper()}", default, field.description or ""))
        sections.append((title, rows))
    return sections


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, section by section."""
    return [row for _, rows in settings_groups() for row in rows]
