"""`notif-worker doctor`: checks what `serve` would use and prints one line per check, each failure with its fix.

Exit 0 when nothing fails (warnings allowed), 1 when a check fails, 2 for settings that do not validate.
`--json` prints the same as a list of {check, status, detail, fix}. `--skip-model` leaves out the model load
(and so the fast engine's self-check), for a quick look at the broker and the files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

from worker.commands.flags import add_model_flags, settings_or_none
from worker.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_SETTINGS = 0, 1, 2
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("doctor", help="check everything serve would use; one line per check, with fixes")
    add_model_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable: a JSON list of checks")
    parser.add_argument("--skip-model", action="store_true", help="do not load the model (no engine self-check)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (settings := settings_or_none(args)) is None:
        return EXIT_SETTINGS
    checks = diagnose(settings, load_model=not args.skip_model)
    if args.json:
        print(json.dumps([{"check": n, "status": s, "detail": d, "fix": f} for n, s, d, f in checks], indent=2))
    else:
        for name, status, detail, fix in checks:
            print(f"{MARKS[status]}  {name:<18} {detail}" + (f"\n      fix: {fix}" if status == "fail" and fix else ""))
    failed = sum(status == "fail" for _, status, _, _ in checks)
    if not args.json:
        print(f"{len(checks)} checks: {failed} failed, {sum(s == 'warn' for _, s, _, _ in checks)} warnings")
    return EXIT_FAILED if failed else EXIT_OK


def diagnose(settings: Settings, *, load_model: bool) -> list[tuple[str, str, str, str]]:
    """Every check, in the order serve meets them: the machine, the files, the broker, the port, the engine."""
    from worker.model import preflight as model
    from worker.stream.kafka import preflight as kafka

    found = [model.check_device(settings), model.check_bitsandbytes(settings), *model.check_model_files(settings)]
    checks: list[tuple[str, str, str, str]] = [(c.name, c.status, c.detail, c.fix) for c in found]
    checks += kafka.codec_checks()
    checks += asyncio.run(kafka.broker_checks(settings))
    checks.append(port_check(settings))
    if load_model:
        engine = model.check_engine(settings)
        checks.append((engine.name, engine.status, engine.detail, engine.fix))
    return checks


def port_check(settings: Settings) -> tuple[str, str, str, str]:
    """The metrics port is free to bind as serve binds it (asyncio.start_server: every address of the host,
    SO_REUSEADDR, so connections of a stopped worker still in TIME_WAIT do not count)."""
    where = f"{settings.metrics_host}:{settings.metrics_port}"
    try:
        addresses = socket.getaddrinfo(settings.metrics_host or None, settings.metrics_port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return ("metrics port", "fail", f"{where}: the host does not resolve: {exc.strerror or exc}",
                "set NOTIF_METRICS_HOST to an address of this host (0.0.0.0: all)")
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does beside IPv4
            try:
                sock.bind(address)
            except OSError as exc:
                return ("metrics port", "fail", f"{where} cannot be bound: {exc.strerror or exc}",
                        "stop what listens there, or set NOTIF_METRICS_PORT (or NOTIF_METRICS_HOST)")
    return ("metrics port", "ok", f"{where} is free", "")
