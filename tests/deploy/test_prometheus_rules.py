"""The Prometheus config and rules in deploy/prometheus: valid for promtool, unit-tested
(alerts_test.yml), and every alert a single comparison of one recorded series.

promtool comes from the Debian package `prometheus` (`make prometheus`; `make test` runs it).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"

REQUIRED_ALERTS = {
    "FraudWorkerDown",
    "FraudConsumerLagGrowing",
    "FraudDeadLetterRateHigh",
    "FraudScoringLatencyHigh",
    "FraudAlertSpike",
    "FraudNoMessagesScored",
}
# `<series> <op> <number>`, the series a metric name with optional label matchers.
ALERT_EXPR = re.compile(
    r"^\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<matchers>\{[^{}]*\})?"
    r"\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<number>[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*$"
)
RECORD_NAME = re.compile(r"^fraud:[a-z0-9_]+:[a-z0-9_]+$")
UP = ("up", '{job="fraud-worker"}')


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make prometheus` installs the Debian package")
    done = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _rules() -> tuple[list[dict], list[dict]]:
    recording, alerting = [], []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            (recording if "record" in rule else alerting).append(rule)
    return recording, alerting


def test_promtool_check_config():
    assert "SUCCESS" in _promtool("check", "config", str(CONFIG.relative_to(ROOT)))


def test_promtool_check_rules():
    assert "SUCCESS" in _promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_promtool_rule_unit_tests():
    assert "SUCCESS" in _promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_config_scrapes_the_worker_replicas_and_the_service_and_loads_the_rules():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"fraud-worker", "fraud-serve"}
    assert jobs["fraud-worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "30s"}
    ]
    assert jobs["fraud-serve"]["dns_sd_configs"] == [
        {"names": ["serve"], "type": "A", "port": 8000, "refresh_interval": "30s"}
    ]


def test_every_alert_compares_one_recorded_series_with_a_number():
    recording, alerting = _rules()
    names = [rule["record"] for rule in recording]
    assert len(names) == len(set(names)), "a recording rule name is defined twice"
    assert all(RECORD_NAME.match(name) for name in names), names
    assert {rule["alert"] for rule in alerting} == REQUIRED_ALERTS
    for rule in alerting:
        match = ALERT_EXPR.match(rule["expr"])
        assert match, f"{rule['alert']}: {rule['expr']!r} is not `<series> <op> <number>`"
        series = (match["name"], match["matchers"])
        assert series == UP or (match["name"] in names and match["matchers"] is None), (
            f"{rule['alert']}: {match['name']} is neither a recording rule of {RULES.name} "
            f"nor {''.join(UP)}"
        )
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in REQUIRED_ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case.get("exp_alerts") for case in mine), f"{alert}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{alert}: no quiet case"
