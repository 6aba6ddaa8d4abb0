from pathlib import Path

import pytest

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
