import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from fraud.config import KafkaSettings, ScorerSettings, Settings, to_env


def test_environment_with_nested_sections(monkeypatch):
    monkeypatch.setenv("FRAUD_KAFKA__INPUT_TOPIC", "sms-in")
    monkeypatch.setenv("FRAUD_SCORER__TOP_K", "8")
    monkeypatch.setenv("FRAUD_INDEX_DIR", "/data/index")
    s = Settings()
    assert (s.kafka.input_topic, s.scorer.top_k, s.index_dir) == ("sms-in", 8, Path("/data/index"))
    assert s.kafka.alert_topic == "fraud-alerts"  # untouched fields keep their defaults


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("FRAUD_KAFKA__INPUT_TOPIC", "from-env")
    monkeypatch.setenv("FRAUD_KAFKA__GROUP_ID", "env-group")
    s = Settings(kafka={"input_topic": "from-flag"})
    assert s.kafka.input_topic == "from-flag" and s.kafka.group_id == "env-group"


def test_rules_between_fields_name_both_values():
    with pytest.raises(
        ValueError, match=r"batch_timeout_ms \(5000\).*max_poll_interval_ms \(2000\)"
    ):
        KafkaSettings(batch_timeout_ms=5000, max_poll_interval_ms=2000)


def test_to_env_recreates_the_settings_in_a_child(monkeypatch):
    parent = Settings(scorer=ScorerSettings(threshold=0.7)).model_copy(
        update={"kafka": KafkaSettings(input_topic="x", publish_scores=True), "metrics_port": 0}
    )
    env = to_env(parent)
    assert env["FRAUD_KAFKA__PUBLISH_SCORES"] == "true"
    assert "FRAUD_SCORER__TOP_K" not in env  # defaults stay defaults
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = Settings()
    assert child == parent
    assert child.scorer.model_fields_set == {"threshold"}


def _variables(model: type[BaseModel], prefix: str = "FRAUD_") -> dict[str, object]:
    """Every FRAUD_* variable a settings class reads, with its default."""
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name.upper()}"
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found.update(_variables(kind, f"{key}__"))
        else:
            found[key] = field.default
    return found


def _documented_configuration_rows() -> dict[str, str]:
    """The settings table of docs/configuration.md: {variable: default cell}; a row like
    "`FRAUD_SERVE__HOST` / `_PORT`" names two variables."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = page.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(_?[A-Z0-9_]+)`", cells[0]) if len(cells) >= 3 else []
        for i, name in enumerate(names):
            if name.startswith("_"):  # "/ `_PORT`": the first name's last part replaced
                name = names[0].rsplit("_", 1)[0] + name
            defaults = cells[1].split(" / ")
            rows[name] = defaults[min(i, len(defaults) - 1)]
    return rows


def test_the_docs_document_every_setting_with_its_default():
    documented = _documented_configuration_rows()
    variables = _variables(Settings)
    assert sorted(set(variables) - set(documented)) == []
    assert sorted(n for n in documented if n.startswith("FRAUD_") and n not in variables) == []
    for name, default in variables.items():
        cell = documented[name]
        if isinstance(default, bool):
            assert cell == str(default).lower(), name
        elif isinstance(default, int | float) and re.fullmatch(r"[0-9.]+", cell):
            assert float(cell) == default, name


def test_sasl_ssl_needs_credentials_and_credentials_need_sasl(tmp_path):
    with pytest.raises(ValueError, match="SASL_SSL needs sasl_username and sasl_password"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="fraud")
    # Credentials the protocol would not send: refused rather than connecting in the clear.
    with pytest.raises(ValueError, match="security_protocol is PLAINTEXT, which sends no"):
        KafkaSettings(sasl_username="fraud", sasl_password="secret")  # noqa: S106
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="ssl_cafile is set but security_protocol is SASL_PL"):
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_username="fraud",
            sasl_password="secret",  # noqa: S106
            ssl_cafile=ca,
        )
    with pytest.raises(ValueError, match="ssl_cafile"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")


def test_the_sasl_password_is_masked_when_logged_and_handed_to_a_child(tmp_path, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    secret = "s3cret-value"  # noqa: S105
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_username="fraud",
        sasl_password=secret,
        ssl_cafile=ca,
    )
    settings = Settings().model_copy(update={"kafka": kafka})
    assert secret not in settings.model_dump_json()  # what the processes log
    assert secret not in repr(settings) and secret not in str(settings)
    env = to_env(settings)
    assert env["FRAUD_KAFKA__SASL_PASSWORD"] == secret
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings().kafka == kafka
