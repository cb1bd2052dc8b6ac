"""`python -m trainer` is `notif-train`."""

from trainer.cli import main

raise SystemExit(main())
