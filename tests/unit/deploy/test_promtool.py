"""Prometheus files through the real promtool: the compose config, the alert rules (both copies) and
the rules' unit tests (deploy/prometheus/*_test.yml), which must cover every alert both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.tools import ROOT, promtool, run

PROMETHEUS = ROOT / "deploy/prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy/k8s/prometheusrule.yaml"
RULE_TESTS = sorted(PROMETHEUS.glob("*_test.yml"))


@pytest.fixture(scope="module")
def tool() -> str:
    return str(promtool())


def alert_names(rule_file: Path) -> list[str]:
    groups = yaml.safe_load(rule_file.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def rule_test_cases(test_files: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(file, alert_rule_test case) for every case in the promtool unit test files."""
    return [
        (path, case)
        for path in test_files
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def uncovered_alerts(alerts: list[str], cases: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[str]]:
    """alert -> what its tests lack: a case where it fires, a case where it stays silent."""
    fires = {case["alertname"] for _, case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for _, case in cases if not case.get("exp_alerts")}
    missing: dict[str, list[str]] = {}
    for alert in alerts:
        lacks = [what for what, seen in (("a firing case", fires), ("a silent case", silent)) if alert not in seen]
        if lacks:
            missing[alert] = lacks
    return missing


def test_promtool_is_the_pinned_release(tool: str) -> None:
    assert "version 2.42.0" in run([tool, "--version"]).stdout


def test_compose_prometheus_config_and_its_rule_files_check(tool: str) -> None:
    out = run([tool, "check", "config", str(PROMETHEUS / "prometheus.yml")]).stdout
    assert "SUCCESS" in out and "alerts.yml" in out, out


def test_alert_rules_check(tool: str) -> None:
    out = run([tool, "check", "rules", str(ALERTS)]).stdout
    assert f"SUCCESS: {len(alert_names(ALERTS))} rules found" in out, out


def test_prometheus_rule_spec_checks(tool: str, tmp_path: Path) -> None:
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    extracted = tmp_path / "prometheusrule-spec.yml"
    extracted.write_text(yaml.safe_dump(spec))
    out = run([tool, "check", "rules", str(extracted)]).stdout
    assert f"SUCCESS: {len(alert_names(extracted))} rules found" in out, out


def test_promtool_check_rejects_a_broken_rule(tool: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Broken", "expr": "sum(rate(notif_commits_total[5m])", "for": "1m"}]}]}))
    assert run([tool, "check", "rules", str(broken)], check=False).returncode != 0


def test_rule_unit_tests_pass(tool: str) -> None:
    assert RULE_TESTS, "deploy/prometheus/*_test.yml holds the alerts' unit tests"
    for path in RULE_TESTS:
        out = run([tool, "test", "rules", path.name], cwd=path.parent).stdout
        assert "SUCCESS" in out, out


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = alert_names(ALERTS)
    assert alerts, "alerts.yml defines alerts"
    cases = rule_test_cases(RULE_TESTS)
    missing = uncovered_alerts(alerts, cases)
    assert not missing, f"alerts without promtool tests (add them to deploy/prometheus/alerts_test.yml): {missing}"
    unknown = {case["alertname"] for _, case in cases} - set(alerts)
    assert not unknown, f"tests name alerts that do not exist: {unknown}"


def test_coverage_check_finds_a_missing_case() -> None:
    cases: list[tuple[Path, dict[str, Any]]] = [
        (ALERTS, {"alertname": "A", "exp_alerts": [{"exp_labels": {}}]}),
        (ALERTS, {"alertname": "A", "exp_alerts": []}),
        (ALERTS, {"alertname": "B", "exp_alerts": []}),
    ]
    assert uncovered_alerts(["A", "B", "C"], cases) == {
        "B": ["a firing case"], "C": ["a firing case", "a silent case"]}


def test_rule_tests_load_the_shipped_rule_file() -> None:
    for path in RULE_TESTS:
        files = yaml.safe_load(path.read_text())["rule_files"]
        assert [(path.parent / name).resolve() for name in files] == [ALERTS.resolve()], path.name
