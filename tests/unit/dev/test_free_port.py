"""free_port hands out ports no other process is given meanwhile: outside the ephemeral range, never twice."""

from __future__ import annotations

import os
import socket

import pytest

from worker.dev import broker
from worker.dev.broker import _ephemeral_range, free_port


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [port for port in ports if low <= port <= high]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    start = 24000 + os.getpid() % 4000  # a small pool of our own, every port of it but one held by listeners
    monkeypatch.setattr(broker, "PORT_POOL", (start, start + 8))
    monkeypatch.setattr(broker, "_HANDED_OUT", set())
    held: list[socket.socket] = []
    try:
        for port in range(start, start + 8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            held.append(sock)
        free = held.pop()
        port = free.getsockname()[1]
        free.close()
        assert broker.free_port() == port  # drawn until the one free port comes up
    finally:
        for sock in held:
            sock.close()
