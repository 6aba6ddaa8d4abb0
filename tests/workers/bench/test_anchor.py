"""`fraud bench`'s anchor: the plain pipeline decides correctly through the real broker, and
sentence-transformers' encode is measured beside the project's encoder."""

import json

import pytest
from kafka.structs import TopicPartition

from fraud.config import Settings
from fraud.data import seed_references_path
from fraud.datasets import read_labeled_csv
from fraud.encoding import bundled_model_path
from workers.bench.anchor import (
    plain_pipeline_bench,
    sentence_transformers_bench,
    start_plain_pipeline,
)
from workers.bench.end_to_end import ScoreReader, run_settings, send_messages
from workers.kafka import make_consumer
from workers.processes import stop_process

pytestmark = [pytest.mark.model]


def _seed_text(label: str) -> str:
    """A message of the seed set, the plain pipeline's references, with this label."""
    return next(r.text for r in read_labeled_csv(seed_references_path()) if r.label == label)


@pytest.mark.integration
def test_the_plain_pipeline_alerts_on_a_known_scam_and_not_on_a_legit_message(
    kafka_settings, tmp_path
):
    settings = run_settings(Settings().model_copy(update={"kafka": kafka_settings}), "plain")
    texts = [_seed_text("fraud"), _seed_text("legit")]
    with (tmp_path / "plain.log").open("w+") as log:
        proc = start_plain_pipeline(settings, bundled_model_path(), log)
        reader = ScoreReader(settings.kafka)
        try:
            sent = send_messages(settings.kafka, texts, "known", None)
            reader.wait_for(list(sent), timeout_s=300)
        finally:
            reader.close()
            stop_process(proc)
    consumer = make_consumer(settings.kafka, group_id=None)
    tp = TopicPartition(settings.kafka.scores_topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    decisions = {}
    for records in consumer.poll(timeout_ms=5000).values():
        for r in records:
            decisions[r.key.decode()] = json.loads(r.value)
    consumer.close()
    assert decisions["known-0"]["alert"] is True and decisions["known-0"]["score"] > 0.99
    assert decisions["known-1"]["alert"] is False


@pytest.mark.integration
def test_plain_pipeline_bench_measures_saturation(kafka_settings):
    settings = Settings().model_copy(update={"kafka": kafka_settings})
    texts = [_seed_text("fraud"), _seed_text("legit"), "see you at 6"]
    result = plain_pipeline_bench(settings, bundled_model_path(), texts, n_saturation=20)
    assert result["saturation_messages_per_s"] > 0
    assert result["peak_rss_mib"] > 100  # a process that loaded a transformer


def test_sentence_transformers_is_measured_beside_the_project(encoder):
    texts = ["your parcel is held, pay the fee", "see you at 6", "URGENT verify your account"]
    result = sentence_transformers_bench(encoder, bundled_model_path(), texts, 1, 8)
    rates = result["messages_per_s"]
    assert set(rates) == {"project", "sentence_transformers_fp32", "sentence_transformers_bf16"}
    assert all(v > 0 for v in rates.values())
    assert result["project_over_fp32"] == pytest.approx(
        rates["project"] / rates["sentence_transformers_fp32"], rel=0.01
    )
