"""Observability: Prometheus metrics, the health state and its HTTP port, structured logs."""
