"""`notif-worker bench decode`: microseconds to read one record, per envelope, and the flat JSON's cost before/after.

"contract only" is the contract's flat decoder alone (`decode_notification`: what intake ran before the
envelopes); "reader" is what intake runs now (`read_notification`: frame, envelope detection, the contract).
Each row is the best of `--repeat` passes over the same records, divided by their count; the rows' passes take
turns, so the before/after difference is not a change in the machine's load between two rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.bench.common import bench_messages
from worker.contract import decode_notification
from worker.envelopes.read import read_notification

SAMPLES: dict[str, dict[str, Any]] = {
    "fcm_v1": {"message": {"token": "t", "notification": {"title": "Sale", "body": "50% off everything today"},
                           "data": {"app": "Shop", "id": "m1"}}},
    "apns": {"aps": {"alert": {"title": "Mum", "subtitle": "Family", "body": "call me when you can"}}},
    "android": {"packageName": "com.whatsapp", "title": "Mum", "text": "call me", "bigText": "call me when you can"},
    "cloudevents": {"specversion": "1.0", "id": "e1", "source": "/github", "type": "pr",
                    "data": {"title": "PR #42", "body": "please review"}},
}


def register_decode(subparsers: Any) -> None:
    parser = subparsers.add_parser("decode", help="microseconds to read one record, per envelope")
    parser.add_argument("--n", type=int, default=5000, help="records per row")
    parser.add_argument("--repeat", type=int, default=7, help="passes per row (the best is reported)")
    parser.add_argument("--json", help="write the results here")
    parser.set_defaults(func=run_decode)


Rows = dict[tuple[str, str], tuple[Callable[[bytes], Any], Sequence[bytes]]]  # (records, path) -> (reader, values)


def best_us(rows: Rows, repeat: int) -> dict[tuple[str, str], float]:
    """Microseconds per record of each row, the best of ``repeat`` passes; the rows' passes take turns, so a change
    in the machine's load (a shared VM) reaches every row alike instead of reading as one path's cost."""
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(repeat):
        for row, (call, values) in rows.items():
            started = time.perf_counter()
            for value in values:
                call(value)
            best[row] = min(best[row], (time.perf_counter() - started) / len(values))
    return {row: round(seconds * 1e6, 2) for row, seconds in best.items()}


def run_decode(args: argparse.Namespace) -> int:
    flat = [value for _, value in bench_messages(args.n)]
    before, after = ("flat JSON (synthetic notifications)", "contract only (before)"), (
        "flat JSON (synthetic notifications)", "reader (after)")
    calls: Rows = {before: (decode_notification, flat), after: (read_notification, flat)}
    calls.update({(name, "reader"): (read_notification, [json.dumps(sample).encode()] * args.n)
                  for name, sample in SAMPLES.items()})
    timed = best_us(calls, args.repeat)
    rows = [{"records": records, "path": path, "us_per_record": us} for (records, path), us in timed.items()]
    print("| records | path | us per record |\n|---|---|---|")
    for row in rows:
        print(f"| {row['records']} | {row['path']} | {row['us_per_record']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "repeat": args.repeat, "rows": rows}, indent=2))
    print(f"reader - contract on flat JSON: {timed[after] - timed[before]:+.2f} us", file=sys.stderr)
    return 0
