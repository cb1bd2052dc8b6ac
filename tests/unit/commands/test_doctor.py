"""The doctor's metrics-port check binds as serve's HTTP server does (asyncio.start_server)."""

from __future__ import annotations

import socket

from worker.commands.doctor import port_check
from worker.settings import Settings


def at(port: int, host: str = "127.0.0.1") -> Settings:
    return Settings(metrics_host=host, metrics_port=port)


def test_a_listening_port_is_taken_and_a_free_one_is_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_check(at(port))[1] == "fail"
    assert port_check(at(port))[1] == "ok"


def test_a_port_whose_last_connections_linger_is_free_as_serve_finds_it() -> None:
    """Connections a stopped serve closed first stay in TIME_WAIT; asyncio's server binds past them (both with
    SO_REUSEADDR, as asyncio sets it), so a restart works and the doctor must not call the port taken."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the last serve's asyncio server had
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: its end waits in TIME_WAIT
            client.recv(1)
    assert port_check(at(port))[1] == "ok"


def test_a_host_that_does_not_resolve_fails_with_its_fix() -> None:
    _, status, detail, fix = port_check(at(9108, "no-such-host.invalid"))
    assert status == "fail" and "no-such-host.invalid" in detail and "NOTIF_METRICS_HOST" in fix
