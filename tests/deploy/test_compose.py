"""docker-compose.yml, deploy/Dockerfile and the Grafana files, checked without a Docker engine.

The compose file goes through check-jsonschema (a dev dependency) with the Compose
Specification's JSON schema that it vendors; what a schema cannot see is checked here: the
files and directories it mounts and builds from exist, the services and volumes it names are
declared, its `fraud` commands parse and its FRAUD_* variables are settings. The dashboard's
queries are checked for form here; tests/deploy/test_prometheus_live.py runs them.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from fraud.config import Settings
from workers.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "fraud.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _volumes(service: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of each of a service's mounts, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], v.get("source", ""), v["target"]))
            continue
        source, target = v.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def _default(value: str) -> str:
    """A compose value with ${VAR:-default} / ${VAR-default} replaced by the default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))


def _fraud_commands(service: dict) -> list[list[str]]:
    """The `fraud` command lines a service runs: its command with the image's entrypoint,
    or each `fraud ...` line of a `sh -c` script."""
    command = service.get("command", [])
    if service.get("entrypoint", ["fraud"])[0] == "fraud":
        return [command]
    script = "\n".join(command) if isinstance(command, list) else command
    return [
        shlex.split(line.strip())[1:]
        for line in script.splitlines()
        if line.strip().startswith("fraud ")
    ]


# -- the compose file --------------------------------------------------------------------------


def test_the_compose_spec_validator_accepts_the_compose_file():
    """check-jsonschema with its vendored Compose Specification schema (the format of
    `docker compose` v2; no top-level `version:`)."""
    found = Path(sys.executable).parent / "check-jsonschema"
    tool = str(found) if found.exists() else shutil.which("check-jsonschema")
    if tool is None:
        pytest.fail("check-jsonschema is not installed: `make install` (a dev dependency)")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services_of_the_stack_are_there(compose):
    services = compose["services"]
    assert {
        "kafka",
        "init",
        "worker",
        "serve",
        "feedback",
        "prometheus",
        "grafana",
        "producer",
    } <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert "healthcheck" in services["kafka"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["environment"]["FRAUD_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 (scraped)
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert services["init"]["restart"] == "no"
    serve = services["serve"]
    assert serve["environment"]["FRAUD_SERVE__HOST"] == "0.0.0.0"  # noqa: S104 (in its container)
    assert serve["ports"] == ["127.0.0.1:8000:8000"]  # the host's loopback only


def test_every_mounted_path_build_context_and_dockerfile_exists(compose):
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for kind, source, target in _volumes(service):
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name}: mounts {source} at {target}: missing"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            assert dockerfile.resolve() == DOCKERFILE.resolve()


def test_depends_on_names_services_of_the_file(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in services, f"{name} depends on unknown service {other}"


def test_the_fraud_commands_parse_and_the_fraud_variables_are_settings(compose, monkeypatch):
    parser = build_parser()
    ran = set()
    for name, service in compose["services"].items():
        if service.get("image", "").startswith(("apache/", "prom/", "grafana/")):
            continue
        for argv in _fraud_commands(service):
            args = parser.parse_args(argv)  # exits (fails) on an unknown command or flag
            ran.add(args.func.__name__)
        env = {k: _default(v) for k, v in service.get("environment", {}).items()}
        for key in env:
            if not key.startswith("FRAUD_"):
                continue
            field, *nested = key.removeprefix("FRAUD_").lower().split("__")
            assert field in Settings.model_fields, f"{name}: {key} is no setting"
            if nested:
                section = Settings.model_fields[field].annotation
                assert nested[0] in section.model_fields, f"{name}: {key} is no setting"
        for key in [k for k in os.environ if k.startswith("FRAUD_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Settings()  # the values validate
    assert {
        "cmd_worker",
        "cmd_serve",
        "cmd_feedback_processor",
        "cmd_produce",
        "cmd_setup",
    } <= ran


def test_prometheus_gets_its_config_and_every_rule_file(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = {target: source for _, source, target in _volumes(prometheus)}
    config_source = mounts.get("/etc/prometheus/prometheus.yml")
    assert config_source, "prometheus.yml is not mounted at /etc/prometheus/"
    config = yaml.safe_load((ROOT / config_source).read_text())
    for rule_file in config.get("rule_files", []):
        target = str(PurePosixPath("/etc/prometheus") / rule_file)
        assert target in mounts, f"rule file {rule_file} is not mounted at {target}"


def test_grafana_gets_the_provisioning_and_the_dashboards(compose):
    grafana = compose["services"]["grafana"]
    mounts = {target: (ROOT / source).resolve() for _, source, target in _volumes(grafana)}
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == (GRAFANA / "dashboards").resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / PurePosixPath(home).name).is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# -- the dashboard -----------------------------------------------------------------------------


def _datasource() -> dict:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(sources) == 1
    return sources[0]


def _panels(dashboard: dict) -> list[dict]:
    panels = list(dashboard["panels"])
    for row in [p for p in panels if p["type"] == "row"]:
        panels += row.get("panels", [])
    return [p for p in panels if p["type"] != "row"]


def test_the_datasource_is_the_compose_prometheus():
    source = _datasource()
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_the_provisioned_prometheus(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == "fraud-pipeline" and dashboard["schemaVersion"] >= 36
    assert dashboard.get("templating", {}).get("list", []) == []
    uid = _datasource()["uid"]
    panels = _panels(dashboard)
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, title
        targets = panel.get("targets", [])
        assert targets, f"{title}: no target"
        assert len({t["refId"] for t in targets}) == len(targets), f"{title}: refIds repeat"
        for target in targets:
            assert target.get("refId") and target.get("expr"), f"{title}: {target}"
            assert target["datasource"]["uid"] == uid, title
            expr = target["expr"]
            # The only Grafana variable: $__rate_interval, the one range of every selector.
            assert set(re.findall(r"\$\{?(\w+)", expr)) <= {"__rate_interval"}, expr
            assert set(re.findall(r"\[([^\]]*)\]", expr)) <= {"$__rate_interval"}, expr
            assert not re.search(r"\bfraud:", expr), f"{title}: uses a recording rule"


def test_the_dashboard_covers_the_worker_metrics():
    exprs = " ".join(
        t["expr"]
        for path in DASHBOARDS
        for p in _panels(json.loads(path.read_text()))
        for t in p["targets"]
    )
    for metric in (
        "fraud_messages_consumed_total",
        "fraud_messages_scored_total",
        "fraud_alerts_published_total",
        "fraud_dead_letters_total",
        "fraud_score_bucket",
        "fraud_end_to_end_latency_seconds_bucket",
        "fraud_processing_latency_seconds_bucket",
        "fraud_consumer_lag_messages",
        "fraud_stage_duration_seconds_sum",
        "fraud_index_references",
        "fraud_index_fraud_references",
        "fraud_worker_up",
        'up{job="fraud-worker"}',
        "fraud_history_memory_bytes",
        "fraud_verdict_propagation_seconds_bucket",
        "fraud_model_info",
    ):
        assert metric in exprs, metric


# -- the image ---------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _ignored(patterns: list[str], path: str) -> bool:
    parts = PurePosixPath(path).parts
    return any(PurePosixPath(*parts[: i + 1]).match(p) for p in patterns for i in range(len(parts)))


def test_the_dockerfile_copies_what_exists_and_is_not_ignored():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args.split() for kind, args in _instructions() if kind in ("COPY", "ADD")]
    assert copies
    for args in copies:
        args = [a for a in args if not a.startswith("--")]
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not _ignored(patterns, source), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", ".cache", "out", "deploy/kafka/lib", ".git"):
        assert _ignored(patterns, heavy), f".dockerignore lets {heavy} into the build context"


def test_the_image_runs_fraud_as_a_user_without_privileges():
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    final = dict(instructions)  # the last of each kind
    assert json.loads(final["ENTRYPOINT"]) == ["fraud"]
    assert final["EXPOSE"] == "9108"
    assert final["USER"] not in ("root", "0")
    run = " ".join(args for kind, args in instructions if kind == "RUN")
    assert "pip install" in run and "--extra-index-url" in run
