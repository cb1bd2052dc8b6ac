"""A pytest plugin (its hook imported by tests/conftest.py): a run with a skipped test fails, so CI never passes a skip.

GPU tests are deselected by their marker (`-m "not gpu"`), not skipped, so they do not count. A run that
skips on purpose (e.g. against an external broker, where the tests that restart their own broker cannot
run) says so with NOTIF_TEST_ALLOW_SKIPS=1.
"""

from __future__ import annotations

import os

import pytest

ALLOW_ENV = "NOTIF_TEST_ALLOW_SKIPS"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if not skipped or os.environ.get(ALLOW_ENV) == "1":
        return
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"{skipped} test(s) skipped: a skip is not a pass (set {ALLOW_ENV}=1 to allow)",
                            red=True, bold=True)
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):  # a whole module skipped
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
