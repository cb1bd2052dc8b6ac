"""`python -m worker` is `notif-worker`."""

from worker.cli import main

raise SystemExit(main())
