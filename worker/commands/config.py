"""`notif-worker config`: print the resolved settings, or the tables of every NOTIF_* variable by concern."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.settings import Settings, settings_groups


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="print the resolved settings (secrets masked)")
    parser.add_argument("--table", action="store_true", help="print the Markdown tables of all variables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.table:
        for index, (title, rows) in enumerate(settings_groups()):
            print(("\n" if index else "") + f"**{title}**\n\n| Variable | Default | Meaning |\n|---|---|---|")
            for name, default, meaning in rows:
                print(f"| `{name}` | `{default}` | {meaning} |")
        return 0
    print(json.dumps(Settings().model_dump(mode="json"), indent=2))
    return 0
