"""`python -m trainer` is `notif-train`."""

from worker.commands.stopping import EARLY

EARLY.install()  # first: a SIGTERM while the rest imports is remembered (worker/commands/stopping.py)

from trainer.cli import entry  # noqa: E402  (after the signal handlers, on purpose)

raise SystemExit(entry())
