"""`notif-worker config`: print the resolved settings or the table of every NOTIF_* variable."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.settings import Settings, settings_table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="print the resolved settings (secrets masked)")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of all variables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.table:
        print("| Variable | Default | Meaning |\n|---|---|---|")
        for name, default, meaning in settings_table():
            print(f"| `{name}` | `{default}` | {meaning} |")
        return 0
    print(json.dumps(Settings().model_dump(mode="json"), indent=2))
    return 0
