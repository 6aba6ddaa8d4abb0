"""`fraud serve`: inline scoring over HTTP, against the real model and the seed index.

Most tests drive the app in process (FastAPI's TestClient runs its lifespan: the scoring
thread, the batcher); the concurrency, schema-fuzzing and Kafka tests run it in a real
uvicorn server on a free loopback port.
"""

import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx2
import pytest
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from kafka import KafkaAdminClient
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings, Settings
from fraud.encoding.encoder import Encoder
from fraud.index.changelog import change_key, encode_upsert
from fraud.index.reference_index import Reference, ReferenceIndex
from fraud.metrics import build_serve_metrics
from fraud.schemas import Alert, Message
from tests.fakes import assess
from tests.workers.kafka_helpers import own_topics, read_topic
from workers.broker import LocalBroker
from workers.kafka.clients import make_producer
from workers.serve.app import Scorer, bind, create_app, load_scorer, load_tokens
from workers.state.bank import publish_index

pytestmark = [pytest.mark.model]

SCAM = "Your parcel is held at the depot: pay the 1.99 GBP fee at parcel-redelivery.info"
LEGIT = "running late, order me a flat white and I'll be there in 10"
TOKEN = "s3cret-token-for-tests"  # noqa: S105 (a test's token)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOVEL_SCAM = (
    "Zorblax guild notice: your crystal dividend is frozen. Send 3 goats' worth of BTC to "
    "wallet zx-99-qq within 2 hours to unlock it."
)


def _app(detector, serve: ServeSettings | None = None, tokens=(), load=None):
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    load = load or (lambda: Scorer(detector, metrics.scoring))
    return create_app(serve or ServeSettings(), load, registry, metrics, tokens), metrics


def _wait_ready(get, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        r = get("/readyz")
        if r.status_code == 200:
            return r.json()
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.05)


@contextmanager
def client_for(detector, serve: ServeSettings | None = None, tokens=(), load=None):
    app, metrics = _app(detector, serve, tokens, load)
    with TestClient(app) as client:
        _wait_ready(client.get)
        yield client


@contextmanager
def running_server(app, **config):
    """The app in a real uvicorn server on a free loopback port: its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        with httpx2.Client(base_url=base) as client:
            _wait_ready(client.get)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def _expected(detector, text: str, message_id: str = "m", **fields) -> Alert:
    """The worker's decision for the same message (scored_at, processing_ms aside)."""
    message = Message(id=message_id, text=text, **fields)
    assessment = assess(detector, [text])[0]
    return detector.decide(message, assessment, scored_at="", processing_ms=0)


def _same_decision(got: Alert, expected: Alert, tolerance: float = 1e-6) -> None:
    ignore = {"scored_at", "processing_ms", "score", "category_distribution", "evidence"}
    assert got.model_dump(exclude=ignore) == expected.model_dump(exclude=ignore)
    assert got.score == pytest.approx(expected.score, abs=tolerance)
    assert [e.reference_id for e in got.evidence] == [e.reference_id for e in expected.evidence]
    for a, b in zip(got.evidence, expected.evidence, strict=True):
        assert a.weight == pytest.approx(b.weight, abs=tolerance)
    assert got.category_distribution.keys() == expected.category_distribution.keys()


# -- the decisions ---------------------------------------------------------------------------


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
        got = Alert.from_bytes(r.content)
        expected = _expected(
            detector, SCAM, "msg-1", recipient="+44 7700 900123", metadata=metadata
        )
        _same_decision(got, expected)
        assert got.is_alert and got.category == "delivery"  # the seed bank knows this scam
        assert got.passthrough == {"recipient": "+44 7700 900123", "metadata": metadata}
        assert got.index_version == detector.index.version and got.model == detector.model
        assert got.alert_id == expected.alert_id  # the worker's id for the same message
        assert SCAM not in r.text  # the text is not copied into the decision
        assert got.processing_ms > 0

        r = client.post("/v1/score", json={"id": "msg-2", "text": LEGIT})
        got = Alert.from_bytes(r.content)
        _same_decision(got, _expected(detector, LEGIT, "msg-2"))
        assert not got.is_alert and got.passthrough == {}


def test_batch_answers_every_decision_in_request_order(detector):
    texts = [SCAM, LEGIT, NOVEL_SCAM, "URGENT! You have won a 1 week FREE membership", LEGIT]
    messages = [{"id": f"b-{i}", "text": t} for i, t in enumerate(texts)]
    with client_for(detector) as client:
        r = client.post("/v1/score:batch", json={"messages": messages})
        assert r.status_code == 200, r.text
        decisions = [Alert.model_validate(d) for d in r.json()["decisions"]]
    assert [d.message_id for d in decisions] == [m["id"] for m in messages]
    verdicts = assess(detector, texts)  # the same texts encoded together, as the service did
    for decision, verdict in zip(decisions, verdicts, strict=True):
        assert decision.score == pytest.approx(verdict.score, abs=1e-6)
        assert decision.is_alert == verdict.is_alert
    assert decisions[1].score == decisions[4].score  # the same text, the same decision


def test_concurrent_requests_are_scored_together_and_each_gets_its_own_answer(detector):
    app, _ = _app(detector, ServeSettings(max_batch=8, batch_wait_ms=20))
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
    batches = _sample(page, "fraud_batch_size_messages_count")
    assert _sample(page, "fraud_messages_scored_total") == len(texts)
    assert batches < len(texts)  # some requests shared a batch
    assert _sample(page, 'fraud_batch_size_messages_bucket{le="8.0"}') == batches  # max_batch


def _sample(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not on the metrics page")


# -- health, readiness, metrics ------------------------------------------------------------


def test_healthz_answers_while_loading_and_readyz_once_loaded(detector):
    release = threading.Event()
    metrics_box = {}

    def slow_load() -> Scorer:
        assert release.wait(30)
        return Scorer(detector, metrics_box["m"].scoring)

    app, metrics = _app(detector, load=slow_load)
    metrics_box["m"] = metrics
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "loading"
        r = client.post("/v1/score", json={"id": "early", "text": SCAM})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        release.set()
        ready = _wait_ready(client.get)
        assert ready["index_version"] == detector.index.version
        assert ready["references"] == len(detector.index)
        assert client.post("/v1/score", json={"id": "later", "text": SCAM}).status_code == 200


def test_a_failed_load_is_reported_and_not_ready(detector):
    failures = []

    def broken_load() -> Scorer:
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
    assert _sample(page, 'fraud_http_requests_total{code="200",route="/v1/score"}') == 1
    assert _sample(page, 'fraud_http_requests_total{code="422",route="/v1/score"}') == 1
    assert _sample(page, 'fraud_alerts_published_total{category="delivery"}') == 1
    assert 'fraud_stage_duration_seconds_count{stage="encode"} 1.0' in page
    # What only a Kafka worker sets is left out rather than shown idle.
    assert "fraud_worker_up" not in page and "fraud_consumer_lag" not in page


# -- authentication ------------------------------------------------------------------------


def test_with_tokens_score_needs_one_and_probes_do_not(detector):
    other = "second-token"  # noqa: S105
    with client_for(detector, tokens=[TOKEN, other]) as client:
        body = {"id": "a-1", "text": SCAM}
        r = client.post("/v1/score", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in r.json()["detail"]
        for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
            r = client.post("/v1/score", json=body, headers={"Authorization": header})
            assert r.status_code == 401, header
        # Refused before the body is read: invalid JSON without a token is a 401 too.
        r = client.post("/v1/score", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert client.post("/v1/score", json=body, headers=AUTH).status_code == 200
        r = client.post("/v1/score", json=body, headers={"Authorization": f"bearer {other}"})
        assert r.status_code == 200
        batch = {"messages": [body]}
        assert client.post("/v1/score:batch", json=batch).status_code == 401
        assert client.post("/v1/score:batch", json=batch, headers=AUTH).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        schema = client.get("/openapi.json").json()
        assert schema["paths"]["/v1/score"]["post"]["security"] == [{"HTTPBearer": []}]


def test_without_tokens_the_service_is_open_on_its_address(detector):
    with client_for(detector) as client:
        assert client.post("/v1/score", json={"id": "o", "text": SCAM}).status_code == 200
        schema = client.get("/openapi.json").json()
        assert "security" not in schema["paths"]["/v1/score"]["post"]
    assert ServeSettings().host == "127.0.0.1"


def test_tokens_come_from_the_environment_and_a_file(tmp_path, monkeypatch):
    path = tmp_path / "tokens"
    path.write_text("# rotated monthly\nalpha\n\n  beta  \n  # old: gamma-1\n")
    monkeypatch.setenv("FRAUD_SERVE__TOKEN", "gamma")
    monkeypatch.setenv("FRAUD_SERVE__TOKEN_FILE", str(path))
    serve = Settings().serve
    assert load_tokens(serve) == ["gamma", "alpha", "beta"]
    assert "gamma" not in Settings().model_dump_json()  # a secret: masked when logged
    assert load_tokens(ServeSettings()) == []
    assert load_tokens(ServeSettings(token="")) == []  # compose's unset ${FRAUD_SERVE_TOKEN:-}
    from fraud.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be read"):
        load_tokens(ServeSettings(token_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no token"):
        load_tokens(ServeSettings(token_file=tmp_path / "empty"))


# -- limits and malformed requests ---------------------------------------------------------


def test_limits_and_malformed_requests_get_a_clear_4xx(detector, caplog):
    serve = ServeSettings(
        max_request_bytes=4096, max_batch_messages=3, max_text_chars=500, max_queue=8
    )
    private = "Grandma here, the PIN is 4321 and the safe code 9876"  # must not be logged
    json_type = {"content-type": "application/json"}
    cases = [
        # (body, headers, status, a phrase of the answer)
        (b'{"id": "x", "text": "a"' + b" " * 5000 + b"}", json_type, 413, "limit is 4096"),
        (json.dumps({"id": "x", "text": "a" * 501}).encode(), json_type, 422, "at most 500"),
        (b"{", json_type, 422, "JSON decode error"),
        (b"", json_type, 422, "Field required"),
        (b'["id", "text"]', json_type, 422, "valid dictionary"),
        (b'{"text": "hello"}', json_type, 422, "Field required"),
        (b'{"id": "x", "text": 5}', json_type, 422, "valid string"),
        (b'{"id": "", "text": "hello"}', json_type, 422, "at least 1 character"),
        (b'{"id": "x", "text": "  \\n\\t "}', json_type, 422, "match pattern"),
        (b'{"id": "x", "text": "hi", "sender": "bank"}', json_type, 422, "Extra inputs"),
        (b'{"id": "x", "text": "\\ud800"}', json_type, 422, "unicode"),
        (b'{"id": "x", "text": "hi", "metadata": "flat"}', json_type, 422, "valid dictionary"),
        (b'{"id": "x", "text": "\xff\xfe\xfa"}', json_type, 400, "parsing the body"),
        (b'{"id": "x", "text": "hello"}', {"content-type": "text/plain"}, 415, "application/json"),
        (b'{"id": "x", "text": "hello"}', {}, 415, "got none"),
    ]
    deep = {"id": "x", "text": "hi", "metadata": {}}
    level = deep["metadata"]
    for _ in range(40):
        level["k"] = {}
        level = level["k"]
    cases.append((json.dumps(deep).encode(), json_type, 422, "nested deeper than 32"))
    batch = {"messages": [{"id": str(i), "text": "hi"} for i in range(4)]}
    with caplog.at_level(logging.DEBUG), client_for(detector, serve) as client:
        for body, headers, status, phrase in cases:
            r = client.post("/v1/score", content=body, headers=headers)
            assert r.status_code == status, (body[:60], r.text)
            assert phrase in r.text, (body[:60], r.text)
            assert r.headers["content-type"] == "application/json"
        r = client.post("/v1/score:batch", json=batch)
        assert r.status_code == 422 and "at most 3 items" in r.text
        r = client.post("/v1/score:batch", json={"messages": []})
        assert r.status_code == 422 and "at least 1 item" in r.text

        def chunks():  # no Content-Length: the limit counts what arrives
            yield b'{"id": "x", "text": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'"}'

        r = client.post("/v1/score", content=chunks(), headers=json_type)
        assert r.status_code == 413 and "limit is 4096" in r.text
        # Text that normalizes to nothing (zero-width characters) is still scored.
        assert client.post("/v1/score", json={"id": "z", "text": "\u200b\u200d"}).status_code == 200
        assert client.get("/v1/score").status_code == 405
        assert client.get("/nowhere").status_code == 404
        r = client.post("/v1/score", json={"id": "s", "text": private})
        assert r.status_code == 200
        r = client.post("/v1/score", json={"id": "s", "text": private, "extra": 1})
        assert r.status_code == 422
        assert private not in r.text  # the input is not echoed back either
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Grandma" not in logged and "4321" not in logged


def test_a_message_that_fails_to_score_does_not_fail_its_batchmates(detector):
    class Picky:  # an encoder that fails on one text, like a bug on one input would
        name, dim = detector.encoder.name, detector.encoder.dim

        def encode(self, texts):
            if "poison" in " ".join(texts):
                raise ValueError("cannot encode: poison")
            return detector.encoder.encode(texts)

    from fraud.scoring.detector import Detector

    picky = Detector(Picky(), detector.index, detector.params)
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(ServeSettings(), lambda: Scorer(picky, metrics.scoring), registry, metrics)
    messages = [{"id": "ok-1", "text": SCAM}, {"id": "bad", "text": "poison"}]
    with TestClient(app) as client:
        _wait_ready(client.get)
        r = client.post("/v1/score:batch", json={"messages": messages})
        assert r.status_code == 500 and "bad could not be scored" in r.json()["detail"]
        assert client.post("/v1/score", json=messages[0]).status_code == 200
        assert client.post("/v1/score", json=messages[1]).status_code == 500


def test_a_poisoned_request_gets_500_with_an_error_id_and_its_batchmates_their_decisions(
    detector, caplog
):
    poisoned_batches = []

    class Picky:  # the real encoder, failing on one text as a bug on one input would
        name, dim = detector.encoder.name, detector.encoder.dim

        def encode(self, texts):
            if any("poison" in t for t in texts):
                poisoned_batches.append(len(texts))
                raise ValueError(f"cannot encode {texts!r}")  # quotes the text
            return detector.encoder.encode(texts)

    from fraud.scoring.detector import Detector

    picky = Detector(Picky(), detector.index, detector.params)
    app, _ = _app(picky, ServeSettings(max_batch=8, batch_wait_ms=1000))
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
    assert max(poisoned_batches) > 1  # the poisoned message shared a batch
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
    assert _sample(page, 'fraud_batch_failures_total{outcome="isolated"}') >= 1
    assert _sample(page, 'fraud_http_requests_total{code="500",route="/v1/score"}') == 1


def test_a_full_queue_answers_503(detector):
    scoring, release = threading.Event(), threading.Event()

    class Slow(Scorer):
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
        _wait_ready(client.get)
        held = [pool.submit(post, 0)]
        assert scoring.wait(10)  # the first is being scored (and held there)
        held += [pool.submit(post, i) for i in (1, 2)]
        deadline = time.monotonic() + 10
        while _sample(client.get("/metrics").text, "fraud_serve_queued_messages") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = post(3)  # two wait: the queue is full
        assert r.status_code == 503 and "limit 2" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        release.set()
        assert [f.result().status_code for f in held] == [200, 200, 200]


# -- the OpenAPI schema, fuzzed ------------------------------------------------------------


# The schema is the app's own (it depends on the settings, not on the model), so it is
# read at import; the requests go to a real server with the same settings. Limits are
# small enough for the fuzzer to reach them.
FUZZED = ServeSettings(max_text_chars=2000, max_batch_messages=8, max_request_bytes=64_000)
schema = schemathesis.openapi.from_dict(_app(None, FUZZED, tokens=[TOKEN])[0].openapi())


@pytest.fixture(scope="module")
def fuzzed_service(detector):
    app, _ = _app(detector, FUZZED, tokens=[TOKEN])
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


# -- Kafka: publishing, and the reference bank ---------------------------------------------


@pytest.fixture
def shared_encoder(encoder, monkeypatch):
    """load_scorer builds its detector from settings: give it the session's encoder."""
    monkeypatch.setattr(Encoder, "from_settings", classmethod(lambda cls, s: encoder))
    return encoder


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
        _wait_ready(client.get)
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
    assert Alert.from_bytes(alerts[0].value).passthrough == {"recipient": "+44 7700 900123"}
    assert first["is_alert"] and not answers[1]["is_alert"]


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
        version = _wait_ready(client.get)["index_version"]
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
    assert _sample(page, "fraud_bank_changes_applied_total") == 1


def _wait_for(get, check, what: str, timeout_s: float = 60):
    """Poll `get()` until `check(value)` holds; returns that value."""
    deadline = time.monotonic() + timeout_s
    while not check(value := get()):
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.2)
    return value


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
        ready = _wait_ready(client.get)
        assert ready["bank"] == f"following {kafka_settings.bank_topic}"
        admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
        try:
            admin.delete_topics([kafka_settings.bank_topic])
        finally:
            admin.close()
        ready = _wait_for(
            lambda: client.get("/readyz"),
            lambda r: r.json()["bank"].startswith("not following"),
            "the deleted bank topic went unnoticed",
        )
        assert ready.status_code == 200 and ready.json()["ready"]
        assert "with the bank as last read" in ready.json()["detail"]
        assert kafka_settings.bank_topic in ready.json()["bank"]
        page = client.get("/metrics").text
        assert client.post("/v1/score", json={"id": "d-1", "text": SCAM}).json()["is_alert"]
    assert _sample(page, "fraud_bank_following") == 0
    assert _sample(page, "fraud_bank_follow_failures_total") >= 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("not following the reference bank" in e for e in errors) == 1, errors


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
        metric = lambda name: _sample(client.get("/metrics").text, name)  # noqa: E731
        pending = "fraud_serve_publish_pending_records"
        with TestClient(app) as client:
            _wait_ready(client.get)
            score = lambda i: client.post("/v1/score", json={"id": f"b-{i}", "text": LEGIT})  # noqa: E731
            assert all(score(i).status_code == 200 for i in range(3))
            _wait_for(lambda: metric(pending), lambda n: n == 0, "not acknowledged")
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
                ready = _wait_for(
                    lambda: client.get("/readyz").json(),
                    lambda r: r["bank"].startswith("not following"),
                    "the paused broker went unnoticed",
                )
                assert ready["ready"] and "within 5 s" in ready["bank"]
            finally:
                broker.send_signal(signal.SIGCONT)
            _wait_for(
                lambda: client.get("/readyz").json()["bank"],
                lambda b: b == f"following {kafka.bank_topic}",
                "the bank was not followed again",
            )
            assert all(score(i).status_code == 200 for i in range(23, 26))
            _wait_for(lambda: metric(pending), lambda n: n == 0, "not acknowledged")
            dropped = metric("fraud_serve_publish_dropped_total")
            errors = metric("fraud_publish_errors_total")
        published = read_topic(kafka, kafka.scores_topic, at_least=26 - 14)
    ids = [r.key.decode() for r in published]
    assert (dropped, errors, len(ids), len(set(ids))) == (14, 0, 12, 12)
    assert set(ids) == {f"b-{i}" for i in (0, 1, 2, *range(3, 9), 23, 24, 25)}


# -- the process ---------------------------------------------------------------------------


def test_fraud_serve_refuses_a_missing_token_file_and_a_taken_port(tmp_path, capsys):
    from workers.cli.main import main

    assert main(["bench-serve"]) == 2  # no --csv
    assert capsys.readouterr().err.startswith("fraud: error: fraud bench-serve needs")

    assert main(["serve", "--token-file", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fraud: error: token file") and "\n" not in err
    with bind("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        taken.listen()
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fraud: error: cannot listen on 127.0.0.1:{port}")


def test_serve_bench_drives_a_fraud_serve_process(seed_index_dir):
    """The load generator against a real `fraud serve` process, which stops cleanly on
    SIGTERM (few requests: this checks the measurement, it is not one)."""
    from workers.bench.serve import serve_bench

    settings = Settings().model_copy(update={"index_dir": seed_index_dir})
    texts = [SCAM, LEGIT, NOVEL_SCAM, "see you at the station at 6"]
    result = serve_bench(settings, texts, n_saturation=24, n_latency=12, concurrency=4)
    assert result["saturation_messages_per_s"] > 0
    latency = result["latency_at_half_saturation"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert result["server_peak_rss_mib"] > 100  # a process that loaded a transformer
    assert result["server_exit_code"] == 0


def test_the_load_generators_connection_survives_the_servers_idle_timeout(detector):
    """uvicorn closes a kept-alive connection idle for its keep-alive timeout; the bench's
    client reopens it and sends the request again instead of failing the run."""
    import asyncio

    from workers.bench.serve import HttpConnection

    app, _ = _app(detector)
    with running_server(app, timeout_keep_alive=1) as base:
        port = int(base.rsplit(":", 1)[1])

        async def twice() -> list[int]:
            connection = HttpConnection("127.0.0.1", port)
            body = json.dumps({"id": "k", "text": LEGIT}).encode()
            first, _ = await connection.request("POST", "/v1/score", body)
            await asyncio.sleep(1.5)  # the server closes the idle connection meanwhile
            second, answer = await connection.request("POST", "/v1/score", body)
            connection.close()
            return [first, second, json.loads(answer)["message_id"]]

        assert asyncio.run(twice()) == [200, 200, "k"]
