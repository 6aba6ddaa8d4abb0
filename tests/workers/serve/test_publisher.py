"""`fraud serve --publish` (workers/serve/publisher.py): decisions on the workers' topics,
and a broker that does not answer never holding an answer up."""

import json
import signal
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings, Settings
from fraud.index import ReferenceIndex
from fraud.metrics import build_serve_metrics
from fraud.schemas import Decision
from tests.workers.kafka_helpers import own_topics, read_topic
from tests.workers.serve.serving import (
    LEGIT,
    SCAM,
    sample,
    wait_for,
    wait_ready,
)
from workers.broker import LocalBroker
from workers.serve import create_app, load_scorer
from workers.state import publish_index

pytestmark = [pytest.mark.model]


@pytest.mark.integration
def test_publish_writes_decisions_to_the_workers_topics(
    shared_encoder, seed_index_dir, kafka_settings
):
    settings = Settings(index_dir=seed_index_dir).model_copy(
        update={"kafka": kafka_settings, "serve": ServeSettings(publish=True)}
    )
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(settings.serve, lambda: load_scorer(settings, metrics), registry, metrics)
    messages = [
        {"id": "p-1", "text": SCAM, "recipient": "+44 7700 900123"},
        {"id": "p-2", "text": LEGIT},
    ]
    with TestClient(app) as client:
        wait_ready(client.get)
        first = client.post("/v1/score", json=messages[0]).json()
        second = client.post("/v1/score:batch", json={"messages": messages[1:]}).json()
        answers = [first, *second["decisions"]]
        scores = read_topic(kafka_settings, kafka_settings.scores_topic, at_least=2)
        alerts = read_topic(kafka_settings, kafka_settings.alert_topic, at_least=1)
        deadline = time.monotonic() + 10  # the ack counts the alert, just after the answer
        published = 'fraud_alerts_published_total{category="delivery"} 1.0'
        while published not in client.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert [r.key.decode() for r in scores] == ["p-1", "p-2"]
    assert [json.loads(r.value) for r in scores] == answers  # what callers got, byte for byte
    assert [r.key.decode() for r in alerts] == ["p-1"]
    assert Decision.from_bytes(alerts[0].value).passthrough == {"recipient": "+44 7700 900123"}
    assert first["is_alert"] and not answers[1]["is_alert"]


@pytest.mark.integration
def test_with_the_broker_paused_scoring_answers_and_the_publish_queue_drops_and_counts(
    shared_encoder, seed_index_dir, tmp_path
):
    """--publish with a queue of 6 records, on a broker of its own, paused (SIGSTOP) for
    the middle 20 of 26 messages: each is answered at once; 6 wait for the broker, 14
    are dropped and counted; /readyz says the bank is not followed meanwhile. Resumed:
    the 6 are delivered, the bank followed again, and every decision was either published
    or counted as dropped."""
    encoder = shared_encoder
    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    with LocalBroker() as broker:
        kafka = own_topics(broker.bootstrap_servers)
        publish_index(kafka, index, tmp_path)
        serve = ServeSettings(publish=True, publish_queue=6)
        settings = Settings(index_dir=tmp_path).model_copy(update={"kafka": kafka, "serve": serve})
        registry = CollectorRegistry()
        metrics = build_serve_metrics(registry)
        app = create_app(serve, lambda: load_scorer(settings, metrics), registry, metrics)
        metric = lambda name: sample(client.get("/metrics").text, name)  # noqa: E731
        pending = "fraud_serve_publish_pending_records"
        with TestClient(app) as client:
            wait_ready(client.get)
            score = lambda i: client.post("/v1/score", json={"id": f"b-{i}", "text": LEGIT})  # noqa: E731
            assert all(score(i).status_code == 200 for i in range(3))
            wait_for(lambda: metric(pending), lambda n: n == 0, "not acknowledged")
            broker.send_signal(signal.SIGSTOP)
            try:
                slowest = 0.0
                for i in range(3, 23):
                    started = time.monotonic()
                    assert score(i).status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                assert slowest < 2.0, f"an answer waited {slowest:.1f} s for the broker"
                assert metric(pending) == 6
                assert metric("fraud_serve_publish_dropped_total") == 14
                ready = wait_for(
                    lambda: client.get("/readyz").json(),
                    lambda r: r["bank"].startswith("not following"),
                    "the paused broker went unnoticed",
                )
                assert ready["ready"] and "within 5 s" in ready["bank"]
            finally:
                broker.send_signal(signal.SIGCONT)
            wait_for(
                lambda: client.get("/readyz").json()["bank"],
                lambda b: b == f"following {kafka.bank_topic}",
                "the bank was not followed again",
            )
            assert all(score(i).status_code == 200 for i in range(23, 26))
            wait_for(lambda: metric(pending), lambda n: n == 0, "not acknowledged")
            dropped = metric("fraud_serve_publish_dropped_total")
            errors = metric("fraud_publish_errors_total")
        published = read_topic(kafka, kafka.scores_topic, at_least=26 - 14)
    ids = [r.key.decode() for r in published]
    assert (dropped, errors, len(ids), len(set(ids))) == (14, 0, 12, 12)
    assert set(ids) == {f"b-{i}" for i in (0, 1, 2, *range(3, 9), 23, 24, 25)}
