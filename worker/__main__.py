"""`python -m worker` is `notif-worker`."""

from worker.commands.cli import main

raise SystemExit(main())
