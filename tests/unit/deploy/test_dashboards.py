"""Grafana dashboard and Prometheus alert rules: every PromQL expression parses (promql-parser, the
Rust parser of the Prometheus grammar) and every metric it names is one the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser as promql  # dev extra: a missing parser fails these tests, it never skips them
import pytest
import yaml
from prometheus_client import CollectorRegistry

from worker.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy/grafana/dashboards/notif-triage.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy/k8s/prometheusrule.yaml"
# Series Prometheus itself writes for every scrape target; not the worker's, but fair to alert on.
SCRAPE_SERIES = {"up"}
# Grafana's variables, replaced by values of the right kind before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".*",
    "${instance}": ".*",
    "${instance:regex}": ".*",
}


def exported_metric_names() -> set[str]:
    """Sample names of the worker's real registry (histograms: _bucket/_sum/_count; counters: _total)."""
    metrics = Metrics(CollectorRegistry())
    metrics.classifications.labels(folder="Work", priority="3")
    metrics.dead_letters.labels(reason="empty")
    metrics.consumer_lag.labels(topic="t", partition="0")
    metrics.publish_retries.labels(topic="t")
    metrics.authorization_denied.labels(operation="Write", resource="topic:t")  # once the broker denies one
    metrics.engine_info.labels(engine="fast", reason="self_check_passed")  # set once the model is loaded
    metrics.oldest_unacked_age.labels(topic="t", partition="0")
    metrics.model_info.info({"model": "m"})
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


EXPORTED = exported_metric_names()


def substitute_grafana_variables(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Parse with the Prometheus grammar (raises on a syntax or type error) and collect selector names."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"selector without a metric name in {expr!r}"
            names.add(name)

    promql.walk(promql.parse(expr), visit)
    return names


def dashboard_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(dashboard_panels(panel.get("panels", [])))
    return flat


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return alert_rules(yaml.safe_load(ALERTS.read_text())["groups"])


def test_exported_names_come_from_the_registry() -> None:
    assert "notif_messages_consumed_total" in EXPORTED
    assert "notif_end_to_end_latency_seconds_bucket" in EXPORTED
    assert "notif_messages_consumed" not in EXPORTED


def test_checker_rejects_bad_promql_and_unknown_metrics() -> None:
    with pytest.raises(ValueError):
        metric_names("sum(rate(notif_messages_consumed_total[5m])")
    with pytest.raises(ValueError):
        metric_names("rate(notif_ready)")
    assert metric_names("rate(notif_typo_total[5m])") - EXPORTED == {"notif_typo_total"}


def test_every_dashboard_query_parses_and_uses_exported_metrics(dashboard_exprs: list[str]) -> None:
    assert len(dashboard_exprs) >= 15
    for expr in dashboard_exprs:
        used = metric_names(substitute_grafana_variables(expr))
        assert used, f"no metric in {expr!r}"
        assert used <= EXPORTED, f"{expr!r} uses metrics the worker does not export: {used - EXPORTED}"


def test_dashboard_covers_what_the_issue_asks_for(dashboard_exprs: list[str]) -> None:
    used = set().union(*(metric_names(substitute_grafana_variables(e)) for e in dashboard_exprs))
    required = {
        "notif_messages_consumed_total",
        "notif_classifications_total",
        "notif_dead_letters_total",
        "notif_end_to_end_latency_seconds_bucket",
        "notif_inference_latency_seconds_bucket",
        "notif_batch_size_bucket",
        "notif_parse_failures_total",
        "notif_consumer_lag",
        "notif_ready",
        "notif_review_total",
        "notif_shadow_agreement_total",
        "notif_adapter_reloads_total",
    }
    assert required <= used, f"missing panels for {required - used}"
    joined = "\n".join(dashboard_exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(notif_end_to_end_latency" in joined
    assert "sum by (reason)" in joined
    assert "max by (topic, partition) (notif_consumer_lag" in joined
    assert "sum by (folder, priority)" in joined


def test_template_variable_queries_use_exported_metrics(dashboard: dict[str, Any]) -> None:
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
        assert match, f"unexpected variable query {query!r}"
        assert match.group(1) in EXPORTED


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels(dashboard["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    assert dashboard["uid"] == "notif-triage"


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels(dashboard["panels"]):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_alert_parses_and_uses_exported_metrics(alerts: list[dict[str, Any]]) -> None:
    for rule in alerts:
        used = metric_names(rule["expr"])
        assert used <= EXPORTED | SCRAPE_SERIES, f"{rule['alert']}: unknown {used - EXPORTED - SCRAPE_SERIES}"


def test_alerts_cover_the_obvious_failures(alerts: list[dict[str, Any]]) -> None:
    by_metric: dict[str, set[str]] = {}
    for rule in alerts:
        for name in metric_names(rule["expr"]):
            by_metric.setdefault(name, set()).add(rule["alert"])
    for needed in ("up", "notif_consumer_lag", "notif_dead_letters_total", "notif_parse_failures_total",
                   "notif_commit_failing", "notif_breaker_open", "notif_halted_partitions"):
        assert needed in by_metric, f"no alert on {needed}"


def test_alert_rules_are_complete(alerts: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    for rule in alerts:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_worker_down_alert_selects_the_scrape_job() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    service = yaml.safe_load((ROOT / "deploy/k8s/service.yaml").read_text())
    for rule in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"]):
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']} selects job {job}, which compose Prometheus does not scrape"
            assert job == service["metadata"]["name"], "the ServiceMonitor's job label is the Service name"


def test_kubernetes_prometheus_rule_matches_the_alert_file() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
