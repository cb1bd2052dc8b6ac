"""Preflight of the broker side (`notif-worker doctor`): reachable with the configured security, topics, group.

Asks with the settings `serve` would use (worker/stream/kafka/options.py), each answer within a bound, and
returns one (name, status, detail, fix) per check; the command prints them.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from worker.settings import Settings
from worker.stream.kafka.codecs import FIX as CODEC_FIX
from worker.stream.kafka.codecs import check_codecs
from worker.stream.kafka.errors import AccessDenied, OAuthTokenFailed
from worker.stream.kafka.options import Refusal, client_options, login_refusal

Result = tuple[str, str, str, str]  # name, ok|warn|fail, what was seen, the fix of a failure
TIMEOUT_S = 10.0
UNKNOWN_TOPIC, TOPIC_NOT_AUTHORIZED, GROUP_NOT_AUTHORIZED = 3, 29, 30
AUTO_CREATE = "auto.create.topics.enable"


def codec_checks() -> list[Result]:
    """Every compression codec round-trips here (worker/stream/kafka/codecs.py)."""
    problems = check_codecs()
    failing = {name: problem for name, problem in problems.items() if problem is not None}
    if not failing:
        return [("codecs", "ok", f"{', '.join(problems)} round-trip", "")]
    named = "; ".join(f"{name}: {problem}" for name, problem in failing.items())
    return [("codecs", "fail", named, CODEC_FIX)]


async def broker_checks(settings: Settings) -> list[Result]:
    """The broker reachable (TLS and SASL accepted), the topics, the consumer group."""
    try:
        admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(TIMEOUT_S * 1000))
    except (KafkaError, ValueError, OSError) as exc:
        return [("broker", "fail", f"the settings do not describe a client: {exc}", "check NOTIF_SECURITY_*, "
                 "NOTIF_SASL_* and NOTIF_SSL_*")]
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT_S)
        cluster = await asyncio.wait_for(admin.describe_cluster(), TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        await _close(admin)
        try:
            refusal = await login_refusal(settings)
        except OAuthTokenFailed as failed:
            return [("broker", "fail", f"no OAuth token for the SASL login: {failed}"[:300], failed.fix)]
        return [_unreachable(settings, exc) if refusal is None else _refused(settings, refusal)]
    try:
        brokers = [broker["node_id"] for broker in cluster.get("brokers", [])]
        results: list[Result] = [("broker", "ok", f"{settings.kafka_bootstrap_servers}: {len(brokers)} broker(s) "
                                  f"answered over {settings.security_protocol}", "")]
        results += await _topics(admin, settings, brokers[0] if brokers else None)
        results.append(await _group(admin, settings))
        return results
    finally:
        await _close(admin)


def _refused(settings: Settings, refusal: Refusal) -> Result:
    """Which of TLS (ours or the broker's check of our certificate) and SASL turned us away, with its fix."""
    where = settings.kafka_bootstrap_servers
    if refusal.layer == "sasl":
        detail = f"{where} refused the SASL login ({settings.sasl_mechanism}): {refusal.detail}"
    else:
        detail = f"{where}: {refusal.detail}"
    return ("broker", "fail", detail[:300], refusal.fix)


def _unreachable(settings: Settings, exc: BaseException) -> Result:
    text = f"{type(exc).__name__}: {exc}"
    if "Authentication" in text or "SASL" in text or "SSL" in text:
        return ("broker", "fail", f"{settings.kafka_bootstrap_servers} refused the credentials: {text}"[:300],
                "check NOTIF_SASL_MECHANISM/USERNAME/PASSWORD and the TLS files (NOTIF_SSL_*)")
    return ("broker", "fail", f"no answer from {settings.kafka_bootstrap_servers} in {TIMEOUT_S:g}s: {text}"[:300],
            "check NOTIF_KAFKA_BOOTSTRAP_SERVERS (host:port the broker advertises), the network and "
            "NOTIF_SECURITY_PROTOCOL")


async def _topics(admin: AIOKafkaAdminClient, settings: Settings, broker_id: int | None) -> list[Result]:
    wanted = {"input topic": settings.input_topic, "output topic": settings.output_topic,
              "dead-letter topic": settings.dlq_topic,
              **({"review topic": settings.review_topic} if settings.review_topic else {}),
              **({"shadow topic": settings.shadow_topic} if settings.shadow_topic else {})}
    by_name = await asyncio.wait_for(_describe_topics(admin, list(wanted.values())), TIMEOUT_S)
    missing = any(by_name.get(name, (UNKNOWN_TOPIC, 0))[0] == UNKNOWN_TOPIC for name in wanted.values())
    creates = await _auto_create(admin, broker_id) if missing else AutoCreate(None, "")
    results: list[Result] = []
    for role, name in wanted.items():
        code, partitions = by_name.get(name, (UNKNOWN_TOPIC, 0))
        if code == 0:
            results.append((role, "ok", f"{name}: {partitions} partition(s)", ""))
        elif code == TOPIC_NOT_AUTHORIZED:
            denied = AccessDenied("Read" if role == "input topic" else "Write", f"topic:{name}")
            results.append((role, "fail", f"{name}: not authorized to describe it", denied.grant))
        elif code != UNKNOWN_TOPIC:
            results.append((role, "warn", f"{name}: the broker answered {errors.for_code(code).__name__}", ""))
        elif role == "input topic":
            results.append((role, "fail", f"{name} does not exist{creates.on_first_read()}",
                            f"create it with the partitions you want (the worker reads it): "
                            f"kafka-topics --create --topic {name} --partitions N"))
        else:
            results.append(creates.missing(role, name))
    return results


@dataclass(frozen=True)
class AutoCreate:
    """Whether the broker creates a topic on first use (auto.create.topics.enable); None: it would not say."""

    enabled: bool | None
    detail: str  # the setting as the broker stated it, or why it is unknown

    def on_first_read(self) -> str:
        return f" ({self.detail}: the worker's first read would create it so)" if self.enabled else ""

    def missing(self, role: str, name: str) -> Result:
        """A topic the worker writes: created at its first publish where the broker auto-creates topics."""
        fix = f"create it: kafka-topics --create --topic {name} --partitions N"
        if self.enabled:
            return (role, "warn", f"{name} does not exist: the first publish creates it ({self.detail}), if this "
                    "principal may create topics", fix)
        if self.enabled is None:
            return (role, "warn", f"{name} does not exist; whether the broker auto-creates topics is unknown "
                    f"({self.detail}); until it exists /readyz fails", fix)
        return (role, "fail", f"{name} does not exist and the broker creates none ({self.detail})", fix)


async def _describe_topics(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, tuple[int, int]]:
    """Each topic's error code and partition count, asked so that the broker never creates one.

    aiokafka's describe_topics asks with allow_auto_topic_creation (Metadata v4+) on: a broker with
    auto.create.topics.enable would create every missing topic the doctor looks at, the input topic with
    the broker's default partition count. Sent through the admin's own request path (aiokafka is pinned).
    """
    response = await admin._send_request(MetadataRequest(names, allow_auto_topic_creation=False))
    return {topic["topic"]: (topic["error_code"], len(topic["partitions"]))
            for topic in response.to_object()["topics"]}


async def _auto_create(admin: AIOKafkaAdminClient, broker_id: int | None) -> AutoCreate:
    if broker_id is None:
        return AutoCreate(None, "no broker id in the metadata")
    wanted = {AUTO_CREATE: None, "num.partitions": None}
    try:
        answers = await asyncio.wait_for(
            admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id), wanted)]), TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:  # Tansu closes the connection; an ACL may refuse
        return AutoCreate(None, f"DescribeConfigs on the broker failed: {type(exc).__name__}")
    values: dict[str, str] = {}
    for answer in answers:
        for error_code, *_, entries in answer.resources:
            if error_code:
                return AutoCreate(None, f"DescribeConfigs answered {errors.for_code(error_code).__name__}")
            values.update({entry[0]: entry[1] for entry in entries})
    if AUTO_CREATE not in values:
        return AutoCreate(None, f"the broker did not state {AUTO_CREATE}")
    enabled = values[AUTO_CREATE].lower() == "true"
    partitions = f", num.partitions={values['num.partitions']}" if enabled and "num.partitions" in values else ""
    return AutoCreate(enabled, f"{AUTO_CREATE}={values[AUTO_CREATE].lower()}{partitions}")


async def _group(admin: AIOKafkaAdminClient, settings: Settings) -> Result:
    denied = AccessDenied("Read", f"group:{settings.group_id}")  # Read implies the Describe asked here
    try:
        groups = await asyncio.wait_for(_describe_group(admin, settings.group_id), TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        if isinstance(exc, errors.GroupAuthorizationFailedError):
            return ("group", "fail", f"{settings.group_id}: not authorized", denied.grant)
        return ("group", "fail", f"{settings.group_id} could not be described: {exc!r}"[:300], denied.grant)
    for response in groups:
        for group in getattr(response, "groups", []):
            code, state = group[0], group[2]
            if code == GROUP_NOT_AUTHORIZED:
                return ("group", "fail", f"{settings.group_id}: not authorized", denied.grant)
            if code == 0:
                return ("group", "ok", f"{settings.group_id}: {state or 'no members yet'}", "")
    return ("group", "warn", f"{settings.group_id}: no answer for it", "")


async def _describe_group(admin: AIOKafkaAdminClient, group: str) -> Any:
    """Describe the group, retrying what the broker says is transient (a coordinator still loading)."""
    while True:
        try:
            return await admin.describe_consumer_groups([group])
        except KafkaError as exc:
            if not getattr(exc, "retriable", False):
                raise
            await asyncio.sleep(0.2)


async def _close(admin: AIOKafkaAdminClient) -> None:
    with suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(admin.close(), TIMEOUT_S)
