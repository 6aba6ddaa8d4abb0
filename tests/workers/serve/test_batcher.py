"""The queue between requests and the scoring thread (workers/serve/batcher.py): requests
scored together, each answered on its own, and a full queue refused."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings
from fraud.metrics import build_serve_metrics
from tests.fakes import assess
from tests.workers.serve.serving import (
    LEGIT,
    SCAM,
    app_for,
    running_server,
    sample,
    wait_ready,
)
from workers.serve import InlineScorer, create_app

pytestmark = [pytest.mark.model]


def test_concurrent_requests_are_scored_together_and_each_gets_its_own_answer(detector):
    app, _ = app_for(detector, ServeSettings(max_batch=8, batch_wait_ms=20))
    texts = [f"{SCAM} ref {i}" if i % 2 else f"{LEGIT} ({i})" for i in range(24)]
    with running_server(app) as base, httpx2.Client(base_url=base) as client:

        def post(i: int) -> dict:
            r = client.post("/v1/score", json={"id": f"c-{i}", "text": texts[i]})
            assert r.status_code == 200, r.text
            return r.json()

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, range(len(texts))))
        page = client.get("/metrics").text
    assert [a["message_id"] for a in answers] == [f"c-{i}" for i in range(len(texts))]
    expected = assess(detector, texts)
    for answer, verdict in zip(answers, expected, strict=True):
        # Batchmates move a bf16 embedding slightly (fraud/encoding/encoder.py), never the verdict.
        assert answer["score"] == pytest.approx(verdict.score, abs=0.02)
        assert answer["is_alert"] == verdict.is_alert
    batches = sample(page, "fraud_batch_size_messages_count")
    assert sample(page, "fraud_messages_scored_total") == len(texts)
    assert batches < len(texts)  # some requests shared a batch
    assert sample(page, 'fraud_batch_size_messages_bucket{le="8.0"}') == batches  # max_batch


def test_a_full_queue_answers_503(detector):
    scoring, release = threading.Event(), threading.Event()

    class Slow(InlineScorer):
        def score(self, messages, arrived):
            scoring.set()
            assert release.wait(30)
            return super().score(messages, arrived)

    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    serve = ServeSettings(max_batch=1, max_queue=2, max_batch_messages=2, batch_wait_ms=0)
    app = create_app(serve, lambda: Slow(detector, metrics.scoring), registry, metrics)
    post = lambda i: client.post("/v1/score", json={"id": f"q-{i}", "text": LEGIT})  # noqa: E731
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        wait_ready(client.get)
        held = [pool.submit(post, 0)]
        assert scoring.wait(10)  # the first is being scored (and held there)
        held += [pool.submit(post, i) for i in (1, 2)]
        deadline = time.monotonic() + 10
        while sample(client.get("/metrics").text, "fraud_serve_queued_messages") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = post(3)  # two wait: the queue is full
        assert r.status_code == 503 and "limit 2" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        release.set()
        assert [f.result().status_code for f in held] == [200, 200, 200]
