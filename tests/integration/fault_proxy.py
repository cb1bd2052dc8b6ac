"""A fault-injecting TCP proxy for Kafka tests: between clients and a real broker, which keeps its state.

The broker is started advertising the proxy's address (EmbeddedBroker(advertised=...)), so every
connection a client learns from metadata (partition leaders, the group coordinator) goes through the
proxy too. It reads the Kafka request framing (int32 size, int16 api key, ...) from clients, so it can
cut a connection at a chosen request: mid-produce (api key 0) or mid-commit (api key 8), before the
broker sees it. It can also blackhole (hold every byte, answer nothing) and delay each request.
"""

from __future__ import annotations

import asyncio
import struct
from contextlib import suppress

PRODUCE = 0
OFFSET_COMMIT = 8


class FaultProxy:
    """``await FaultProxy(upstream_port).start()``; set the fault fields at any time."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.upstream_port = upstream_port
        self.cut_api_keys: set[int] = set()  # cut the connection when a request with one of these arrives
        self.delay_s = 0.0  # held before each request is forwarded
        self.cuts = 0  # connections cut so far (by cut_api_keys)
        self.requests: dict[int, int] = {}  # api key -> requests forwarded
        self._open = asyncio.Event()  # cleared: blackhole (nothing forwarded either way)
        self._open.set()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        self.heal()
        self.cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def blackhole(self) -> None:
        """Forward nothing (connections stay open, requests go unanswered), as a partitioned network does."""
        self._open.clear()

    def heal(self) -> None:
        """No more faults (connections cut meanwhile stay cut; clients reconnect)."""
        self.cut_api_keys = set()
        self.delay_s = 0.0
        self._open.set()

    def cut_all(self) -> None:
        """Close every connection now."""
        for writer in list(self._connections):
            writer.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        self._connections |= {client_writer, broker_writer}
        try:
            pumps = [asyncio.create_task(self._requests(client_reader, broker_writer, client_writer)),
                     asyncio.create_task(self._responses(broker_reader, client_writer))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_writer, broker_writer):
                self._connections.discard(writer)
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                        client: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">i", head)[0])
                api_key = struct.unpack(">h", frame[:2])[0]
                await self._open.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if api_key in self.cut_api_keys:
                    self.cuts += 1
                    client.close()
                    return
                self.requests[api_key] = self.requests.get(api_key, 0) + 1
                upstream.write(head + frame)
                await upstream.drain()

    async def _responses(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while chunk := await reader.read(65536):
                await self._open.wait()
                client.write(chunk)
                await client.drain()
