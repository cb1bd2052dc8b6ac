"""`python -m worker` is `notif-worker`."""

from worker.commands.stopping import EARLY

EARLY.install()  # first: a SIGTERM while the rest imports is remembered (worker/commands/stopping.py)

from worker.commands.cli import entry  # noqa: E402  (after the signal handlers, on purpose)

raise SystemExit(entry())
