"""The scoring worker on the real broker, with the real encoder and the seed index."""

import json
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraud.config import Settings
from fraud.metrics import STAGES
from fraud.schemas import Decision
from tests.fakes import assess
from tests.workers.kafka_helpers import read_topic, running_worker, send_raw, wait_for_commit
from workers.kafka import ensure_topics
from workers.processes import free_port, start_fraud_process
from workers.producer import produce, read_messages

pytestmark = [pytest.mark.integration, pytest.mark.model]

DEMO = "fraud/data/demo_messages.jsonl"


def test_messages_in_exactly_the_expected_alerts_out(detector, kafka_settings):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    messages = read_messages(DEMO)
    verdicts = assess(detector, [m["text"] for m in messages])
    expected = {m["id"]: v for m, v in zip(messages, verdicts, strict=True) if v.is_alert}
    assert 0 < len(expected) < len(messages)  # both kinds present: the test can fail

    with running_worker(detector, kafka) as (_, registry):
        produce(kafka, kafka.input_topic, messages)
        wait_for_commit(kafka, kafka.input_topic, len(messages))
        sample = registry.get_sample_value

        assert sample("fraud_messages_consumed_total") == len(messages)
        assert sample("fraud_messages_scored_total") == len(messages)
        published = sum(
            sample("fraud_alerts_published_total", {"category": v.category})
            for v in {v.category: v for v in expected.values()}.values()
        )
        assert published == len(expected)

    alerts = read_topic(kafka, kafka.alert_topic, len(expected))
    by_key = {r.key.decode(): Decision.from_bytes(r.value) for r in alerts}
    assert len(alerts) == len(by_key) == len(expected)  # no duplicates, nothing extra
    assert set(by_key) == set(expected)
    sent = {m["id"]: m for m in messages}
    for message_id, alert in by_key.items():
        want = expected[message_id]
        assert alert.message_id == message_id and alert.is_alert
        assert alert.score == pytest.approx(want.score, abs=1e-4)
        assert alert.category == want.category
        assert [e.reference_id for e in alert.evidence] == [e.reference_id for e in want.evidence]
        assert alert.index_version == detector.index.version
        assert alert.model == detector.model
        assert alert.passthrough["sender"] == sent[message_id]["sender"]
        assert alert.passthrough["recipient"] == sent[message_id]["recipient"]

    scores = read_topic(kafka, kafka.scores_topic, len(messages))
    assert sorted(r.key.decode() for r in scores) == sorted(sent)


def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_are_scored(detector, kafka_settings):
    kafka = kafka_settings.model_copy(update={"publish_scores": True, "max_message_bytes": 2048})
    good = [json.dumps({"id": f"ok-{i}", "text": f"see you at {i} pm"}).encode() for i in range(3)]
    bad = {
        "invalid_utf8": b"\xc3\x28 not utf-8",
        "invalid_json": b'{"id": "x", "text": "unterminated',
        "no_text": b'{"id": "x", "sender": "+44"}',
        "too_large": json.dumps({"id": "big", "text": "win " * 1000}).encode(),
    }
    values = [good[0], *bad.values(), good[1], good[2]]  # bad ones in the middle of a batch

    with running_worker(detector, kafka):
        send_raw(kafka, kafka.input_topic, values)
        wait_for_commit(kafka, kafka.input_topic, len(values))

    dead = read_topic(kafka, kafka.dead_letter_topic, len(bad))
    assert len(dead) == len(bad)
    for record in dead:
        headers = dict(record.headers)
        reason = headers["dead_letter_reason"].decode()
        assert record.value == bad[reason]  # the original bytes, untouched
        assert headers["source_topic"].decode() == kafka.input_topic
        assert values[int(headers["source_offset"])] == record.value
    assert {dict(r.headers)["dead_letter_reason"].decode() for r in dead} == set(bad)
    scored = read_topic(kafka, kafka.scores_topic, len(good))
    assert sorted(r.key.decode() for r in scored) == ["ok-0", "ok-1", "ok-2"]


def test_fraud_worker_process_serves_metrics_and_stops_cleanly_on_sigterm(
    seed_index_dir, kafka_settings
):
    kafka = kafka_settings
    port = free_port()
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": seed_index_dir, "metrics_port": port}
    )
    proc = start_fraud_process(("worker", "--publish-scores"), settings, subprocess.PIPE)
    try:
        messages = [
            {
                "id": "w-1",
                "text": "URGENT: your Northbank account is locked, verify at nb-login.co",
            },
            {"id": "w-2", "text": "running 10 min late, order me a flat white"},
        ]
        ensure_topics(kafka, [kafka.input_topic])
        produce(kafka, kafka.input_topic, messages)
        assert len(read_topic(kafka, kafka.scores_topic, 2, timeout_s=120)) == 2
        wait_for_commit(kafka, kafka.input_topic, 2)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            ready = json.loads(r.read())
            assert (r.status, ready["ready"], ready["status"]) == (200, True, "ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for m in text_string_to_metric_families(body)
            for sample in m.samples
        }

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, tuple(sorted(labels.items()))))

        assert value("fraud_messages_scored_total") == 2
        assert value("fraud_index_references", label="fraud") > 0
        assert value("fraud_index_fraud_references", category="phishing") > 0
        assert value("fraud_processing_latency_seconds_count") == 2
        assert value("fraud_end_to_end_latency_seconds_count") == 2
        assert value("fraud_score_count") == 2
        for stage in STAGES:
            assert value("fraud_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert value("fraud_consumer_lag_messages", topic=kafka.input_topic, partition="0") == 0
        assert value("fraud_worker_up") == 1
        assert value("fraud_broker_waiting") == 0 and value("fraud_broker_waits_total") == 0
        (info,) = [k for k in samples if k[0] == "fraud_model_info"]
        model = dict(info[1])["model"]
        # Routed by script (the default): the English model, then the multilingual one.
        assert model.startswith("sentence-transformers/all-MiniLM-L6-v2|multilingual-e5-small")

        start = time.monotonic()
        proc.terminate()
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        assert proc.returncode == 0, out
        assert time.monotonic() - start < 30
        assert "worker stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_idle_worker_scores_a_message_without_waiting_for_batchmates(detector, kafka_settings):
    """Batches are sized by what has arrived (issue 21): with no batch in flight, the first
    records polled go to the encoder at once. batch_timeout_ms is set far above what
    scoring one message takes, so a worker that waited for its batch to fill would take
    at least that long."""
    kafka = kafka_settings.model_copy(update={"batch_timeout_ms": 8000, "publish_scores": True})
    with running_worker(detector, kafka):
        send_raw(kafka, kafka.input_topic, [json.dumps({"id": "w", "text": "warm up"}).encode()])
        read_topic(kafka, kafka.scores_topic, 1, timeout_s=60)  # the worker is polling now
        time.sleep(1)
        sent = time.time()
        send_raw(kafka, kafka.input_topic, [json.dumps({"id": "x", "text": "hi"}).encode()])
        record = read_topic(kafka, kafka.scores_topic, 2, timeout_s=60)[-1]
    assert record.key.decode() == "x"
    assert record.timestamp / 1000 - sent < 4.0
