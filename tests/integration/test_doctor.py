"""`notif-worker doctor` through the real CLI against the real broker, each failure made on purpose."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.adapters import make_adapter
from tests.integration.kafka_helpers import Topics, topic_maker, topic_names
from tests.support import subprocess_env
from worker.contract import contract_fingerprint
from worker.dev.apache_kafka import ApacheKafka
from worker.model.adapters import CALIBRATION_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    run = subprocess.run([sys.executable, "-m", "worker", "doctor", "--json", *args], env=subprocess_env(**env),
                         capture_output=True, text=True, timeout=200, check=False)
    assert run.stdout.startswith("["), run.stdout + run.stderr
    return run.returncode, {check["check"]: check for check in json.loads(run.stdout)}


@pytest.fixture
def base_env(broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path,
             tmp_path: Path) -> Iterator[Callable[..., Awaitable[dict[str, str]]]]:
    async def make() -> dict[str, str]:
        topics = await make_topics(partitions=2)
        adapter = make_adapter(str(tiny_model_dir), tmp_path / "adapter", contract=contract_fingerprint())
        (adapter / CALIBRATION_FILE).write_text(json.dumps({"temperature": {"folder": 1.0, "priority": 1.0}}))
        return {**topics.env(broker), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_ADAPTER": str(adapter),
                "NOTIF_METRICS_PORT": "0", "NOTIF_METRICS_HOST": "127.0.0.1"}

    yield make


async def test_a_sound_setup_passes_with_the_engine_checked(base_env: Callable[..., Awaitable[dict[str, str]]]
                                                            ) -> None:
    env = await base_env()
    code, checks = doctor({**env, "NOTIF_ENGINE": "fast"})
    assert code == 0, [check for check in checks.values() if check["status"] == "fail"]
    assert {name for name, check in checks.items() if check["status"] == "fail"} == set()
    for name in ("broker", "input topic", "output topic", "dead-letter topic", "group", "codecs", "adapter",
                 "calibration", "metrics port", "engine"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["input topic"]["detail"].endswith("2 partition(s)")
    assert checks["engine"]["detail"].startswith("fast (self_check_passed): fast engine self-check passed; ")


@pytest.mark.parametrize("fault", ["wrong bootstrap", "missing input topic", "taken port", "wrong contract",
                                   "no calibration", "no GPU", "hub offline", "hub unreachable"])
async def test_each_fault_is_named_with_its_fix(fault: str, base_env: Callable[..., Awaitable[dict[str, str]]],
                                                 tmp_path: Path) -> None:
    env = await base_env()
    expected: dict[str, Any] = {}
    with socket.socket() as taken:
        if fault == "wrong bootstrap":
            env["NOTIF_KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
            expected = {"broker": "fail"}
        elif fault == "missing input topic":
            env["NOTIF_INPUT_TOPIC"] = "no-such-topic"
            expected = {"input topic": "fail"}
        elif fault == "taken port":
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            env["NOTIF_METRICS_PORT"] = str(taken.getsockname()[1])
            expected = {"metrics port": "fail"}
        elif fault == "wrong contract":
            wrong = make_adapter(env["NOTIF_MODEL"], tmp_path / "other", contract={"contract_version": "2.0"})
            env["NOTIF_ADAPTER"] = str(wrong)
            expected = {"adapter": "fail"}
        elif fault == "no calibration":
            (Path(env["NOTIF_ADAPTER"]) / CALIBRATION_FILE).unlink()
            expected = {"calibration": "warn"}
        elif fault == "no GPU":
            env["NOTIF_DEVICE"] = "cuda"
            expected = {"device": "fail"}
        else:  # a hub id that is not in the (empty) cache, with the hub off or out of reach
            env.update(NOTIF_MODEL="Qwen/Qwen3-0.6B", HF_HOME=str(tmp_path / "hf"))
            if fault == "hub unreachable":
                env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
            expected = {"model": "fail"}
        code, checks = doctor(env, "--skip-model")
    for name, status in expected.items():
        assert checks[name]["status"] == status, checks[name]
        if status == "fail":
            assert checks[name]["fix"], checks[name]
    assert code == (1 if "fail" in expected.values() else 0)


async def test_missing_topics_are_reported_and_never_created(
        broker: str, base_env: Callable[..., Awaitable[dict[str, str]]]) -> None:
    env = await base_env()
    suffix = uuid.uuid4().hex[:8]
    absent = {"NOTIF_INPUT_TOPIC": f"absent-in-{suffix}", "NOTIF_OUTPUT_TOPIC": f"absent-out-{suffix}",
              "NOTIF_DLQ_TOPIC": f"absent-dlq-{suffix}"}
    for _ in range(2):  # the second run sees what the first left behind: still nothing
        code, checks = doctor({**env, **absent}, "--skip-model")
        assert code == 1
        assert checks["input topic"]["status"] == "fail" and "does not exist" in checks["input topic"]["detail"]
        for role in ("output topic", "dead-letter topic"):  # Apache Kafka auto-creates; Tansu does not say
            assert checks[role]["status"] == "warn" and "auto" in checks[role]["detail"], checks[role]
    assert not set(absent.values()) & await topic_names(broker)


@pytest.fixture(scope="module")
def no_auto_create() -> Iterator[ApacheKafka]:
    """Apache Kafka as locked-down clusters run it: topics are made by their owners, never on first use."""
    with ApacheKafka(properties={"auto.create.topics.enable": "false"}) as kafka:
        yield kafka


async def test_a_missing_output_topic_fails_where_the_broker_creates_none(
        no_auto_create: ApacheKafka, tiny_model_dir: Path) -> None:
    topics = await topic_maker(no_auto_create.bootstrap, idempotent=True)(partitions=1)
    env = {**topics.env(no_auto_create.bootstrap), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_METRICS_PORT": "0",
           "NOTIF_OUTPUT_TOPIC": "absent-out", "NOTIF_REVIEW_TOPIC": "absent-review"}
    code, checks = doctor(env, "--skip-model")
    assert code == 1
    for role in ("output topic", "review topic"):
        assert checks[role]["status"] == "fail", checks[role]
        assert "auto.create.topics.enable=false" in checks[role]["detail"] and checks[role]["fix"]
    assert checks["dead-letter topic"]["status"] == "ok"
