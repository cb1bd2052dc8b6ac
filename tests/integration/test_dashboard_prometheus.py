"""The Grafana dashboard and the alert rules on a real Prometheus that scrapes a real worker (`serve
--instant-classifier` on the real broker): every panel's query runs, every metric it names was scraped, and
every alert rule evaluates without error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kafka_helpers import Topics, WorkerProcess, eventually, notification_messages, produce, read_all
from tests.unit.deploy.test_dashboards import (
    DASHBOARD,
    dashboard_panels,
    metric_names,
    substitute_grafana_variables,
)
from tests.unit.deploy.tools import ROOT, prometheus
from worker.dev.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

ALERTS = ROOT / "deploy/prometheus/alerts.yml"
SCRAPES_BEFORE_QUERYING = 5  # rate() over the dashboard's 1m windows needs two samples; a few more is safe


class PrometheusServer:
    """The real server on a loopback port, scraping one target every second, with the alert rules loaded."""

    def __init__(self, target_port: int, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "notif-worker",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with open(self.folder / "prometheus.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(prometheus()), f"--config.file={self.folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the error in the body
            return dict(json.load(exc))

    async def query(self, expr: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.api, "query", query=expr)

    async def answers(self, expr: str) -> bool:
        try:
            return bool((await self.query(expr)).get("data", {}).get("result"))
        except OSError:
            return False  # not listening yet

    def log_tail(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def scraped_worker(broker: str, tmp_path: Path) -> Iterator[tuple[WorkerProcess, PrometheusServer]]:
    worker = WorkerProcess({}, tmp_path / "worker.log")
    server = PrometheusServer(worker.port, tmp_path)
    yield worker, server
    worker.stop()
    server.stop()


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [substitute_grafana_variables(target["expr"])
            for panel in dashboard_panels(dashboard["panels"]) for target in panel.get("targets", [])]


async def test_every_dashboard_query_runs_on_a_real_scrape(
        broker: str, make_topics: Callable[..., Awaitable[Topics]],
        scraped_worker: tuple[WorkerProcess, PrometheusServer]) -> None:
    worker, server = scraped_worker
    topics = await make_topics(partitions=2)
    worker.env.update(topics.env(broker))
    worker.start()
    server.start()
    await produce(broker, topics.input, [*notification_messages(20), (b"bad", b"[]")], partitions=2)
    await worker.wait_ready(60)
    await read_all(broker, topics.output, at_least=20, timeout_s=60)
    await eventually(lambda: server.answers(
        f'count_over_time(notif_messages_consumed_total{{job="notif-worker"}}[1m]) >= {SCRAPES_BEFORE_QUERYING}'
        ' and notif_messages_consumed_total >= 21'), 60, f"Prometheus scraped the worker: {server.log_tail()}")

    queries = dashboard_queries()
    assert len(queries) >= 15
    failed = {}
    empty = []
    for expr in queries:
        answer = await server.query(expr)
        if answer.get("status") != "success":
            failed[expr] = answer.get("error")
        elif not answer["data"]["result"]:
            empty.append(expr)
    assert not failed, f"queries Prometheus rejected: {failed}"
    scraped = set((await asyncio.to_thread(server.api, "label/__name__/values"))["data"])
    used = set().union(*(metric_names(expr) for expr in queries))
    assert used <= scraped, f"the dashboard names metrics the worker did not expose: {used - scraped}"
    # The traffic above moves every throughput and latency panel; those must show data, not just parse.
    for needed in ("notif_messages_consumed_total", "notif_end_to_end_latency_seconds_bucket",
                   "notif_dead_letters_total", "notif_consumer_lag"):
        showing = [expr for expr in queries if needed in expr and expr not in empty]
        assert showing, f"no panel on {needed} shows data"

    rules = (await asyncio.to_thread(server.api, "rules"))["data"]["groups"]
    evaluated = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert set(evaluated) >= {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                              for rule in group["rules"] if "alert" in rule}
    assert {name: rule.get("lastError") for name, rule in evaluated.items() if rule["health"] == "err"} == {}
