"""ACL denials in force (worker/stream/kafka/errors.AccessDenied), reported the same way wherever they are met.

Each makes the worker not-ready naming the operation, the resource and the kafka-acls line that grants it
(/readyz), counts in notif_authorization_denied_total (the NotifNotAuthorized alert), and is logged when it
begins (not_authorized) and when it ends (authorized). Nothing is dead-lettered or skipped meanwhile: the
consumer retries its poll, the outbox its publish, and commits never pass what was published.
"""

from __future__ import annotations

import structlog

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.stream.kafka.errors import AccessDenied

log = structlog.get_logger(__name__)

PREFIX = "denied:"


def report_denied(health: HealthState, metrics: Metrics, denial: AccessDenied) -> None:
    """The broker denied us ``denial.operation`` on ``denial.resource`` (again)."""
    key = PREFIX + denial.resource
    if health.problem(key) is None:
        log.error("not_authorized", operation=denial.operation, resource=denial.resource, error=str(denial))
    health.set_problem(key, str(denial))
    metrics.authorization_denied.labels(operation=denial.operation, resource=denial.resource).inc()


def report_allowed(health: HealthState, resource: str) -> None:
    """An operation on ``resource`` succeeded: a denial of it is over."""
    key = PREFIX + resource
    if health.problem(key) is not None:
        health.clear_problem(key)
        log.info("authorized", resource=resource)
