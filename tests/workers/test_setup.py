"""`fraud setup`, on the real broker: topics with their partitions, the index linked."""

import json

import pytest

from fraud.config import Settings, to_env
from workers.kafka_clients import partition_count

pytestmark = [pytest.mark.integration, pytest.mark.model]


def test_setup_publishes_the_seed_set_once_then_snapshots_the_bank(
    kafka_settings, tmp_path, monkeypatch, capsys
):
    from fraud.cli import main
    from fraud.index import MANIFEST_FILE

    kafka = kafka_settings
    for key, value in to_env(Settings().model_copy(update={"kafka": kafka})).items():
        monkeypatch.setenv(key, value)
    first, second = tmp_path / "first", tmp_path / "second"

    assert main(["setup", "--partitions", "3", "--index", str(first)]) == 0
    assert "published the seed set" in capsys.readouterr().out
    assert partition_count(kafka, kafka.input_topic) == 3
    assert partition_count(kafka, kafka.history_topic) == 3
    for topic in (kafka.bank_topic, kafka.citation_topic, kafka.alert_topic, kafka.campaign_topic):
        assert partition_count(kafka, topic) >= 1, topic

    assert main(["setup", "--partitions", "3", "--index", str(second)]) == 0
    assert "snapshot" in capsys.readouterr().out
    a, b = (json.loads((d / MANIFEST_FILE).read_text()) for d in (first, second))
    assert a["index_version"] == b["index_version"]  # the same references, from the bank
    assert a["changelog_offsets"] == b["changelog_offsets"] and a["changelog_offsets"]
