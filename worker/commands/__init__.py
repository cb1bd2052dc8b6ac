"""The `notif-worker` commands: serve, classify, demo, produce-demo, config, the shared model flags, the CLI entry."""
