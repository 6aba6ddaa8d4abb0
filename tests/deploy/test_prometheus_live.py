"""The dashboard and the alert rules, proven against a real Prometheus scraping a real worker.

A real `fraud worker` process scores real messages from the real local broker; the Debian
package's `prometheus` scrapes it with the project's own config (only its scrape targets
and intervals rewritten for loopback and a short test) and evaluates the project's own
rules. Then every dashboard panel's query, every recording rule and every alert expression
goes through Prometheus's HTTP API: an error, or no data where data must be, fails.
Run with `-s` to see the value each one returned.
"""

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from fraud.config import Settings
from fraud.index import ReferenceIndex
from fraud.scoring.verdicts import AnalystVerdict
from tests.workers.kafka_helpers import read_topic, running_processor, send_raw
from workers.feedback import FeedbackProcessor
from workers.kafka import ensure_topics, make_producer
from workers.processes import free_port, start_fraud_process
from workers.producer import produce, read_messages
from workers.state import publish_index

pytestmark = [pytest.mark.integration, pytest.mark.model]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERT = re.compile(r"^\s*(?P<series>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<number>[-+0-9.eE]+)\s*$")
RATE_INTERVAL = "1m"  # what the test gives Grafana's $__rate_interval


def _query(url: str, expr: str) -> dict:
    params = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=30) as reply:  # noqa: S310
        return json.load(reply)


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as reply:  # noqa: S310
        return json.load(reply)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL) of every target of every dashboard panel."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        panels = list(dashboard.get("panels", []))
        for row in [p for p in panels if p.get("type") == "row"]:
            panels += row.get("panels", [])
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                    out.append((f"{panel.get('title')} / {target.get('refId')}", expr))
    return out


def rules() -> tuple[list[dict], list[dict]]:
    """(recording rules, alerting rules) of the project's rule files."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    recording, alerting = [], []
    for name in config.get("rule_files", []):
        for group in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["groups"]:
            for rule in group["rules"]:
                (recording if "record" in rule else alerting).append(rule)
    return recording, alerting


def _first_value(result: dict) -> str:
    data = result["data"]["result"]
    if not data:
        return "no data"
    sample = data[0].get("value") or data[0].get("values", [[0, "?"]])[-1]
    return f"{sample[1]} ({len(data)} series)"


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make prometheus` installs the Debian package")
    return binary


def test_every_panel_and_rule_answers_from_a_real_prometheus(
    prometheus_bin, encoder, seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    ensure_topics(kafka, [kafka.input_topic], partitions=2)
    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    publish_index(kafka, index, tmp_path / "index")  # the worker follows the bank
    metrics_port, prom_port = free_port(), free_port()
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": tmp_path / "index", "metrics_port": metrics_port}
    )
    processor = FeedbackProcessor.open(kafka, encoder)
    stack = ExitStack()
    stack.enter_context(running_processor(processor))
    worker_log = (tmp_path / "worker.log").open("w")
    worker = start_fraud_process(("worker", "--publish-scores"), settings, worker_log)

    # The project's config, pointed at this worker, scraping and evaluating every second.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s"}
    config["global"]["evaluation_interval"] = "1s"
    config["scrape_configs"] = [
        {"job_name": "fraud-worker", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    ]
    for name in config.get("rule_files", []):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=prom_log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:
        demo = read_messages(ROOT / "fraud" / "data" / "demo_messages.jsonl")
        # One message first, so the traffic below meets a worker that has loaded its model.
        produce(kafka, kafka.input_topic, [{"id": "warm-up", "text": "hello"}])
        read_topic(kafka, kafka.scores_topic, 1, timeout_s=120)
        # Real traffic over about 10 s (20 s for the README's picture), with a few bad
        # records among it: rounds a few 1 s scrapes apart.
        pause_s = 4 if os.environ.get("FRAUD_REPORT_PNG") else 2
        for round_ in range(4):
            batch = [{**m, "id": f"{m['id']}-r{round_}"} for m in demo]
            produce(kafka, kafka.input_topic, batch)
            send_raw(kafka, kafka.input_topic, [b"\xff not utf-8", b"{not json"])
            time.sleep(pause_s)
        read_topic(kafka, kafka.scores_topic, 1 + 4 * len(demo), timeout_s=120)
        # An analyst clears the first false positive: the verdict reaches the worker.
        verdict = AnalystVerdict(message_id="demo-001-r0", verdict="legit", analyst="test")
        producer = make_producer(kafka)
        producer.send(kafka.feedback_topic, verdict.to_bytes()).get(30)
        producer.close(timeout=10)
        produce(kafka, kafka.input_topic, [{"id": "after-verdict", "text": "see you at 6"}])
        read_topic(kafka, kafka.scores_topic, 2 + 4 * len(demo), timeout_s=60)
        time.sleep(3)  # a few more scrapes and rule evaluations after the last batch

        up = _query(url, 'up{job="fraud-worker"}')["data"]["result"]
        assert up and up[0]["value"][1] == "1", (up, (tmp_path / "prometheus.log").read_text())

        failures, table = [], []
        for name, expr in panel_queries():
            result = _query(url, expr)
            table.append(("panel", name, _first_value(result)))
            values = [float(r["value"][1]) for r in result["data"]["result"]]
            if result["status"] != "success" or not values or all(map(math.isnan, values)):
                failures.append(f"panel {name}: no data for {expr}")
        recording, alerting = rules()
        for rule in recording:
            result = _query(url, rule["record"])
            table.append(("record", rule["record"], _first_value(result)))
            if not result["data"]["result"]:
                failures.append(f"recording rule {rule['record']}: no data ({rule['expr']})")
        for rule in alerting:
            match = ALERT.match(rule["expr"])
            assert match, f"alert {rule['alert']}: expr is not `<series> <op> <number>`"
            full = _query(url, rule["expr"])  # must evaluate; it fires or not
            signal = _query(url, match["series"])
            table.append(
                (
                    "alert",
                    rule["alert"],
                    f"{_first_value(signal)}; condition met: {bool(full['data']['result'])}",
                )
            )
            if not signal["data"]["result"]:
                failures.append(f"alert {rule['alert']}: no data for {match['series']}")
        evaluated = _get(url, "/api/v1/rules")["data"]["groups"]
        for group in evaluated:
            for rule in group["rules"]:
                if rule.get("health") != "ok":
                    failures.append(
                        f"rule {rule['name']}: {rule.get('health')} {rule.get('lastError')}"
                    )

        print("\n" + "\n".join(f"{kind:7} {name:60} {value}" for kind, name, value in table))
        (tmp_path / "values.json").write_text(json.dumps(table, indent=1))
        assert len(panel_queries()) >= 9 and recording and len(alerting) >= 6
        assert not failures, "\n".join(failures)

        # `fraud report` draws the main panels from the same server.
        from workers.cli.main import main

        png = tmp_path / "report.png"
        assert (
            main(
                ["report", "--prometheus", url, "--minutes", "2", "--step", "2", "--out", str(png)]
            )
            == 0
        )
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        if os.environ.get("FRAUD_REPORT_PNG"):  # how the README's picture was made
            shutil.copy(png, os.environ["FRAUD_REPORT_PNG"])
    finally:
        for proc in (worker, prometheus):
            proc.terminate()
        for proc in (worker, prometheus):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        worker_log.close()
        prom_log.close()
        stack.close()  # the processor: stopped, closed, its errors fail the test
