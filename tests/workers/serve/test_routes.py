"""`fraud serve`'s routes (workers/serve/routes.py), in process against the real model and
the seed index: the decisions, health, readiness and metrics, and the OpenAPI schema
fuzzed against a real server."""

import threading
import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings
from fraud.metrics import build_serve_metrics
from fraud.schemas import Decision
from tests.fakes import assess
from tests.workers.serve.serving import (
    AUTH,
    LEGIT,
    NOVEL_SCAM,
    SCAM,
    TOKEN,
    app_for,
    client_for,
    expected_decision,
    running_server,
    same_decision,
    sample,
    wait_ready,
)
from workers.serve import InlineScorer, create_app

pytestmark = [pytest.mark.model]


def test_score_answers_the_workers_decision_for_the_same_message(detector):
    metadata = {"sender": "RoyalMail", "channel": "sms", "nested": {"a": [1, 2.5, None]}}
    with client_for(detector) as client:
        r = client.post(
            "/v1/score",
            json={
                "id": "msg-1",
                "text": SCAM,
                "recipient": "+44 7700 900123",
                "metadata": metadata,
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        got = Decision.from_bytes(r.content)
        expected = expected_decision(
            detector, SCAM, "msg-1", recipient="+44 7700 900123", metadata=metadata
        )
        same_decision(got, expected)
        assert got.is_alert and got.category == "delivery"  # the seed bank knows this scam
        assert got.passthrough == {"recipient": "+44 7700 900123", "metadata": metadata}
        assert got.index_version == detector.index.version and got.model == detector.model
        assert got.alert_id == expected.alert_id  # the worker's id for the same message
        assert SCAM not in r.text  # the text is not copied into the decision
        assert got.processing_ms > 0

        r = client.post("/v1/score", json={"id": "msg-2", "text": LEGIT})
        got = Decision.from_bytes(r.content)
        same_decision(got, expected_decision(detector, LEGIT, "msg-2"))
        assert not got.is_alert and got.passthrough == {}


def test_batch_answers_every_decision_in_request_order(detector):
    texts = [SCAM, LEGIT, NOVEL_SCAM, "URGENT! You have won a 1 week FREE membership", LEGIT]
    messages = [{"id": f"b-{i}", "text": t} for i, t in enumerate(texts)]
    with client_for(detector) as client:
        r = client.post("/v1/score:batch", json={"messages": messages})
        assert r.status_code == 200, r.text
        decisions = [Decision.model_validate(d) for d in r.json()["decisions"]]
    assert [d.message_id for d in decisions] == [m["id"] for m in messages]
    verdicts = assess(detector, texts)  # the same texts encoded together, as the service did
    for decision, verdict in zip(decisions, verdicts, strict=True):
        assert decision.score == pytest.approx(verdict.score, abs=1e-6)
        assert decision.is_alert == verdict.is_alert
    assert decisions[1].score == decisions[4].score  # the same text, the same decision


def test_healthz_answers_while_loading_and_readyz_once_loaded(detector):
    release = threading.Event()
    metrics_box = {}

    def slow_load() -> InlineScorer:
        assert release.wait(30)
        return InlineScorer(detector, metrics_box["m"].scoring)

    app, metrics = app_for(detector, load=slow_load)
    metrics_box["m"] = metrics
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "loading"
        r = client.post("/v1/score", json={"id": "early", "text": SCAM})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        release.set()
        ready = wait_ready(client.get)
        assert ready["index_version"] == detector.index.version
        assert ready["references"] == len(detector.index)
        assert client.post("/v1/score", json={"id": "later", "text": SCAM}).status_code == 200


def test_a_failed_load_is_reported_and_not_ready(detector):
    failures = []

    def broken_load() -> InlineScorer:
        raise RuntimeError("no index at /nowhere")

    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(ServeSettings(), broken_load, registry, metrics, on_fatal=failures.append)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.get("/readyz")
        assert r.status_code == 503 and "no index at /nowhere" in r.json()["detail"]
    assert isinstance(failures[0], RuntimeError)


def test_metrics_page_has_the_workers_names_and_the_http_ones(detector):
    with client_for(detector) as client:
        client.post("/v1/score", json={"id": "m-1", "text": SCAM})
        client.post("/v1/score", json={"id": "m-2"})
        page = client.get("/metrics").text
    for name in (
        "fraud_messages_consumed_total",
        "fraud_messages_scored_total",
        "fraud_alerts_published_total",
        "fraud_score_bucket",
        "fraud_batch_size_messages_bucket",
        "fraud_processing_latency_seconds_bucket",
        "fraud_stage_duration_seconds_bucket",
        "fraud_index_references",
        "fraud_index_fraud_references",
        "fraud_model_info",
        "fraud_http_request_duration_seconds_bucket",
        "fraud_serve_ready 1.0",
    ):
        assert name in page, name
    assert sample(page, 'fraud_http_requests_total{code="200",route="/v1/score"}') == 1
    assert sample(page, 'fraud_http_requests_total{code="422",route="/v1/score"}') == 1
    assert sample(page, 'fraud_alerts_published_total{category="delivery"}') == 1
    assert 'fraud_stage_duration_seconds_count{stage="encode"} 1.0' in page
    # What only a Kafka worker sets is left out rather than shown idle.
    assert "fraud_worker_up" not in page and "fraud_consumer_lag" not in page


# -- the OpenAPI schema, fuzzed ------------------------------------------------------------


# The schema is the app's own (it depends on the settings, not on the model), so it is
# read at import; the requests go to a real server with the same settings. Limits are
# small enough for the fuzzer to reach them.
FUZZED = ServeSettings(max_text_chars=2000, max_batch_messages=8, max_request_bytes=64_000)
schema = schemathesis.openapi.from_dict(app_for(None, FUZZED, tokens=[TOKEN])[0].openapi())


@pytest.fixture(scope="module")
def fuzzed_service(detector):
    app, _ = app_for(detector, FUZZED, tokens=[TOKEN])
    with running_server(app) as base:
        yield base


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_answers_as_its_openapi_schema_says(case, fuzzed_service):
    """Generated from the app's OpenAPI schema: no 500, every answer conforms (status
    code, content type, body), invalid data refused, valid data accepted, and the token
    checked (schemathesis also sends requests without it)."""
    case.call_and_validate(base_url=fuzzed_service, headers=AUTH)
