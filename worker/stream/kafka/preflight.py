"""Preflight of the broker side (`notif-worker doctor`): reachable with the configured security, topics, group.

Asks with the settings `serve` would use (worker/stream/kafka/options.py), each answer within a bound, and
returns one (name, status, detail, fix) per check; the command prints them.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from worker.settings import Settings
from worker.stream.kafka.codecs import FIX as CODEC_FIX
from worker.stream.kafka.codecs import check_codecs
from worker.stream.kafka.options import client_options, login_refusal

Result = tuple[str, str, str, str]  # name, ok|warn|fail, what was seen, the fix of a failure
TIMEOUT_S = 10.0
UNKNOWN_TOPIC, TOPIC_NOT_AUTHORIZED, GROUP_NOT_AUTHORIZED = 3, 29, 30


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
        refusal = await login_refusal(settings)
        if refusal is not None:
            return [("broker", "fail", f"{settings.kafka_bootstrap_servers} refused the login: {refusal}"[:300],
                     "check NOTIF_SASL_MECHANISM/USERNAME/PASSWORD and the TLS files (NOTIF_SSL_*)")]
        return [_unreachable(settings, exc)]
    try:
        brokers = len(cluster.get("brokers", []))
        results: list[Result] = [("broker", "ok", f"{settings.kafka_bootstrap_servers}: {brokers} broker(s) "
                                  f"answered over {settings.security_protocol}", "")]
        results += await _topics(admin, settings)
        results.append(await _group(admin, settings))
        return results
    finally:
        await _close(admin)


def _unreachable(settings: Settings, exc: BaseException) -> Result:
    text = f"{type(exc).__name__}: {exc}"
    if "Authentication" in text or "SASL" in text or "SSL" in text:
        return ("broker", "fail", f"{settings.kafka_bootstrap_servers} refused the credentials: {text}"[:300],
                "check NOTIF_SASL_MECHANISM/USERNAME/PASSWORD and the TLS files (NOTIF_SSL_*)")
    return ("broker", "fail", f"no answer from {settings.kafka_bootstrap_servers} in {TIMEOUT_S:g}s: {text}"[:300],
            "check NOTIF_KAFKA_BOOTSTRAP_SERVERS (host:port the broker advertises), the network and "
            "NOTIF_SECURITY_PROTOCOL")


async def _topics(admin: AIOKafkaAdminClient, settings: Settings) -> list[Result]:
    wanted = {"input topic": settings.input_topic, "output topic": settings.output_topic,
              "dead-letter topic": settings.dlq_topic,
              **({"review topic": settings.review_topic} if settings.review_topic else {}),
              **({"shadow topic": settings.shadow_topic} if settings.shadow_topic else {})}
    described = await asyncio.wait_for(admin.describe_topics(list(wanted.values())), TIMEOUT_S)
    by_name: dict[str, Any] = {topic["topic"]: topic for topic in described}
    results: list[Result] = []
    for role, name in wanted.items():
        topic = by_name.get(name, {"error_code": UNKNOWN_TOPIC, "partitions": []})
        code, partitions = topic["error_code"], len(topic["partitions"])
        if code == 0:
            results.append((role, "ok", f"{name}: {partitions} partition(s)", ""))
        elif code == TOPIC_NOT_AUTHORIZED:
            results.append((role, "fail", f"{name}: not authorized to describe it",
                            f"grant this principal Describe{' and Read' if role == 'input topic' else ' and Write'}"
                            f" on {name}"))
        elif role == "input topic":
            results.append((role, "fail", f"{name} does not exist", f"create it (the worker reads it): "
                            f"kafka-topics --create --topic {name} --partitions N"))
        else:
            results.append((role, "warn", f"{name} does not exist: the first publish creates it only where the "
                            "broker auto-creates topics; until then /readyz fails", f"create {name}"))
    return results


async def _group(admin: AIOKafkaAdminClient, settings: Settings) -> Result:
    try:
        groups = await asyncio.wait_for(_describe_group(admin, settings.group_id), TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        return ("group", "fail", f"{settings.group_id} could not be described: {exc!r}"[:300],
                f"grant this principal Describe and Read on the group {settings.group_id}")
    for response in groups:
        for group in getattr(response, "groups", []):
            code, state = group[0], group[2]
            if code == GROUP_NOT_AUTHORIZED:
                return ("group", "fail", f"{settings.group_id}: not authorized",
                        f"grant this principal Read on the group {settings.group_id}")
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
