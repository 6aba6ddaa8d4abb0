"""What the scoring thread does (workers/serve/scorer.py): a message that fails is isolated
from its batchmates; the reference bank followed as a worker follows it, and a bank it
cannot follow reported."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings, Settings
from fraud.index import Reference, ReferenceIndex
from fraud.index.changelog import change_key, encode_upsert
from fraud.metrics import build_serve_metrics
from fraud.scoring.detector import Detector
from tests.fakes import PoisonedEncoder, assess
from tests.workers.serve.serving import (
    LEGIT,
    NOVEL_SCAM,
    SCAM,
    app_for,
    running_server,
    sample,
    wait_for,
    wait_ready,
)
from workers.kafka import make_producer
from workers.serve import InlineScorer, create_app, load_scorer
from workers.state import publish_index

pytestmark = [pytest.mark.model]


def test_a_message_that_fails_to_score_does_not_fail_its_batchmates(detector):
    # An encoder that fails on one text, like a bug on one input would.
    picky_encoder = PoisonedEncoder(detector.encoder, "poison", ValueError)
    picky = Detector(picky_encoder, detector.index, detector.params)
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(
        ServeSettings(), lambda: InlineScorer(picky, metrics.scoring), registry, metrics
    )
    messages = [{"id": "ok-1", "text": SCAM}, {"id": "bad", "text": "poison"}]
    with TestClient(app) as client:
        wait_ready(client.get)
        r = client.post("/v1/score:batch", json={"messages": messages})
        assert r.status_code == 500 and "bad could not be scored" in r.json()["detail"]
        assert client.post("/v1/score", json=messages[0]).status_code == 200
        assert client.post("/v1/score", json=messages[1]).status_code == 500


def test_a_poisoned_request_gets_500_with_an_error_id_and_its_batchmates_their_decisions(
    detector, caplog
):
    # The real encoder, failing on one text as a bug on one input would (quoting it).
    picky_encoder = PoisonedEncoder(detector.encoder, "poison", ValueError)
    picky = Detector(picky_encoder, detector.index, detector.params)
    app, _ = app_for(picky, ServeSettings(max_batch=8, batch_wait_ms=1000))
    texts = [f"{SCAM} ref {i}" if i % 2 else f"{LEGIT} ({i})" for i in range(8)]
    texts[3] = "poison pill: you won a prize"
    with (
        caplog.at_level(logging.INFO),
        running_server(app) as base,
        httpx2.Client(base_url=base) as client,
    ):

        def post(i: int) -> httpx2.Response:
            return client.post("/v1/score", json={"id": f"p-{i}", "text": texts[i]})

        with ThreadPoolExecutor(len(texts)) as pool:  # concurrent: scored as one batch
            answers = list(pool.map(post, range(len(texts))))
        page = client.get("/metrics").text
    assert max(picky_encoder.poisoned_batches) > 1  # the poisoned message shared a batch
    failed = answers[3]
    assert failed.status_code == 500, failed.text
    error_id = failed.json()["error_id"]
    assert error_id in failed.json()["detail"] and "p-3" in failed.json()["detail"]
    good = [i for i in range(len(texts)) if i != 3]
    expected = assess(detector, [texts[i] for i in good])
    for i, verdict in zip(good, expected, strict=True):
        assert answers[i].status_code == 200, answers[i].text
        assert answers[i].json()["message_id"] == f"p-{i}"
        assert answers[i].json()["score"] == pytest.approx(verdict.score, abs=0.02)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    (line,) = [line for line in logged.splitlines() if error_id in line]
    assert "p-3" in line and "ValueError" in line
    assert "poison" not in logged  # the id and the class, never the text
    assert sample(page, 'fraud_batch_failures_total{outcome="isolated"}') >= 1
    assert sample(page, 'fraud_http_requests_total{code="500",route="/v1/score"}') == 1


@pytest.mark.integration
def test_follows_the_reference_bank_like_a_worker(
    shared_encoder, seed_index_dir, kafka_settings, tmp_path
):
    encoder = shared_encoder
    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    publish_index(kafka_settings, index, tmp_path)  # tmp_path: an index linked to the bank
    settings = Settings(index_dir=tmp_path).model_copy(update={"kafka": kafka_settings})
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(settings.serve, lambda: load_scorer(settings, metrics), registry, metrics)
    with TestClient(app) as client:
        version = wait_ready(client.get)["index_version"]
        before = client.post("/v1/score", json={"id": "n-1", "text": NOVEL_SCAM}).json()
        assert not before["is_alert"]  # the bank does not know this scam yet

        new_id = 10_000
        reference = Reference(new_id, NOVEL_SCAM, "fraud", "investment", "analyst:test")
        value = encode_upsert(reference, encoder.encode([NOVEL_SCAM])[0], encoder.name)
        producer = make_producer(kafka_settings)
        try:
            producer.send(kafka_settings.bank_topic, value, key=change_key(new_id)).get(30)
        finally:
            producer.close(timeout=10)
        # Applied without traffic (the idle poll), between batches, on the scoring thread.
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["index_version"] == version:
            assert time.monotonic() < deadline, "the bank change did not reach the service"
            time.sleep(0.1)
        after = client.post("/v1/score", json={"id": "n-2", "text": NOVEL_SCAM}).json()
        page = client.get("/metrics").text
    assert after["is_alert"] and after["evidence"][0]["reference_id"] == new_id
    assert after["index_version"] != before["index_version"]
    assert sample(page, "fraud_bank_changes_applied_total") == 1


@pytest.mark.integration
def test_a_deleted_bank_topic_is_reported_not_swallowed(
    shared_encoder, seed_index_dir, kafka_settings, tmp_path, caplog
):
    """The bank topic deleted while the service follows it: still ready and scoring, with
    the bank as last read, and it says so: /readyz's bank and detail, the metrics, one
    error line. (kafka-python's poll returns nothing then; nothing was seen before.)"""
    encoder = shared_encoder
    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    publish_index(kafka_settings, index, tmp_path)
    settings = Settings(index_dir=tmp_path).model_copy(update={"kafka": kafka_settings})
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(settings.serve, lambda: load_scorer(settings, metrics), registry, metrics)
    with TestClient(app) as client:
        ready = wait_ready(client.get)
        assert ready["bank"] == f"following {kafka_settings.bank_topic}"
        admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
        try:
            admin.delete_topics([kafka_settings.bank_topic])
        finally:
            admin.close()
        ready = wait_for(
            lambda: client.get("/readyz"),
            lambda r: r.json()["bank"].startswith("not following"),
            "the deleted bank topic went unnoticed",
        )
        assert ready.status_code == 200 and ready.json()["ready"]
        assert "with the bank as last read" in ready.json()["detail"]
        assert kafka_settings.bank_topic in ready.json()["bank"]
        page = client.get("/metrics").text
        assert client.post("/v1/score", json={"id": "d-1", "text": SCAM}).json()["is_alert"]
    assert sample(page, "fraud_bank_following") == 0
    assert sample(page, "fraud_bank_follow_failures_total") >= 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("not following the reference bank" in e for e in errors) == 1, errors
