"""Health state and the one HTTP port that serves /metrics, /healthz (liveness) and /readyz (readiness).

The server runs on the worker's event loop: if the loop stops turning, /healthz stops answering too,
which is what a liveness probe should see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

REQUEST_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100


class HealthState:
    """What liveness and readiness are computed from; the pipeline and serve update it."""

    def __init__(self, liveness_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._last_beat = clock()
        self._inference_since: dict[int, float] = {}  # each running model call's token -> when it began
        self._calls = 0
        self._starting: str | None = None
        self.model_loaded = False
        self.assigned_partitions = 0
        self.broker_reachable = False
        self._problems: dict[str, tuple[str, float, float | None]] = {}  # key -> (reason, since, fatal after)

    def set_problem(self, key: str, reason: str, *, fatal_after_s: float | None = None) -> None:
        """Not ready while the problem lasts; also not alive once it has lasted ``fatal_after_s``.

        Setting the same key again updates the reason and keeps the time it began.
        """
        since = self._problems[key][1] if key in self._problems else self._clock()
        self._problems[key] = (reason, since, fatal_after_s)

    def clear_problem(self, key: str) -> None:
        self._problems.pop(key, None)

    def problem(self, key: str) -> str | None:
        entry = self._problems.get(key)
        return None if entry is None else entry[0]

    def beat(self) -> None:
        """The consume loop went round once."""
        self._last_beat = self._clock()

    def starting(self, step: str) -> None:
        """A start-up step that cannot beat while it runs (the model download and load): live, "starting"."""
        self._starting = step

    def started(self) -> None:
        """Start-up is over: liveness counts from now."""
        self._starting = None
        self.beat()

    def inference_started(self) -> int:
        """A model call began (with batches in flight, several run at once); returns its token for finished."""
        self._calls += 1
        self._inference_since[self._calls] = self._clock()
        return self._calls

    def inference_finished(self, call: int) -> None:
        """The model call of this token finished."""
        self._inference_since.pop(call, None)

    def live(self) -> tuple[bool, str]:
        """Alive unless the loop stalled or one model call has run for longer than the timeout.

        During a start-up step the answer is "starting": the HTTP server answering shows the process is up,
        and a first model download may take minutes (Docker's HEALTHCHECK and the startupProbe bound it).
        """
        if self._starting is not None:
            return True, f"starting: {self._starting}"
        now = self._clock()
        if now - self._last_beat > self.liveness_timeout_s:
            return False, f"the consume loop made no progress for {now - self._last_beat:.0f}s"
        oldest = min(self._inference_since.values(), default=None)
        if oldest is not None and now - oldest > self.liveness_timeout_s:
            return False, f"a model call has been running for {now - oldest:.0f}s"
        for reason, since, fatal_after_s in self._problems.values():
            if fatal_after_s is not None and now - since > fatal_after_s:
                return False, f"{reason} (for {now - since:.0f}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready when the model is loaded, partitions are assigned, the broker answers and nothing is stuck
        (publishing, committing, a halted partition, the model's circuit breaker: ``set_problem``)."""
        if not self.model_loaded:
            return False, "the model is not loaded"
        if not self.broker_reachable:
            return False, "the Kafka broker is not reachable"
        if self._problems:  # before the assignment: a denied group is why none is assigned
            return False, self._problems[min(self._problems)][0]
        if self.assigned_partitions == 0:
            return False, "no input partitions are assigned"
        return True, "ok"


class HealthServer:
    """A minimal HTTP/1.0 server on asyncio for the three endpoints."""

    def __init__(self, state: HealthState, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self.state = state
        self.registry = registry
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])  # the real one when port was 0
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, path: str) -> tuple[HTTPStatus, str, bytes]:
        """(status, content type, body) for a request path."""
        route = path.split("?", 1)[0]
        if route == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if route in ("/healthz", "/readyz"):
            ok, reason = self.state.live() if route == "/healthz" else self.state.ready()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            return status, "text/plain; charset=utf-8", (reason + "\n").encode("utf-8")
        return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"try /metrics, /healthz or /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            for _ in range(MAX_HEADER_LINES):
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, content_type, body = HTTPStatus.BAD_REQUEST, "text/plain", b"GET only\n"
            else:
                status, content_type, body = self.respond(parts[1])
            head = (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + (body if parts and parts[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that hangs up or never sends a request line gets nothing
        finally:
            writer.close()
