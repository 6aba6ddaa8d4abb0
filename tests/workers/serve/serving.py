"""What the serve tests share: the app on the session's detector, in process (TestClient)
or in a real uvicorn server, and the worker's decision to compare answers with."""

import threading
import time
from contextlib import contextmanager

import httpx2
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings
from fraud.metrics import build_serve_metrics
from fraud.schemas import Decision, Message
from tests.fakes import assess
from workers.processes import bind
from workers.serve import InlineScorer, create_app

SCAM = "Your parcel is held at the depot: pay the 1.99 GBP fee at parcel-redelivery.info"
LEGIT = "running late, order me a flat white and I'll be there in 10"
TOKEN = "s3cret-token-for-tests"  # noqa: S105 (a test's token)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOVEL_SCAM = (
    "Zorblax guild notice: your crystal dividend is frozen. Send 3 goats' worth of BTC to "
    "wallet zx-99-qq within 2 hours to unlock it."
)


def app_for(detector, serve: ServeSettings | None = None, tokens=(), load=None):
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    load = load or (lambda: InlineScorer(detector, metrics.scoring))
    return create_app(serve or ServeSettings(), load, registry, metrics, tokens), metrics


def wait_ready(get, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        r = get("/readyz")
        if r.status_code == 200:
            return r.json()
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.05)


@contextmanager
def client_for(detector, serve: ServeSettings | None = None, tokens=(), load=None):
    app, metrics = app_for(detector, serve, tokens, load)
    with TestClient(app) as client:
        wait_ready(client.get)
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
            wait_ready(client.get)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def expected_decision(detector, text: str, message_id: str = "m", **fields) -> Decision:
    """The worker's decision for the same message (scored_at, processing_ms aside)."""
    message = Message(id=message_id, text=text, **fields)
    verdict = assess(detector, [text])[0]
    return detector.decide(message, verdict, scored_at="", processing_ms=0)


def same_decision(got: Decision, expected: Decision, tolerance: float = 1e-6) -> None:
    ignore = {"scored_at", "processing_ms", "score", "category_distribution", "evidence"}
    assert got.model_dump(exclude=ignore) == expected.model_dump(exclude=ignore)
    assert got.score == pytest.approx(expected.score, abs=tolerance)
    assert [e.reference_id for e in got.evidence] == [e.reference_id for e in expected.evidence]
    for a, b in zip(got.evidence, expected.evidence, strict=True):
        assert a.weight == pytest.approx(b.weight, abs=tolerance)
    assert got.category_distribution.keys() == expected.category_distribution.keys()


def sample(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not on the metrics page")


def wait_for(get, check, what: str, timeout_s: float = 60):
    """Poll `get()` until `check(value)` holds; returns that value."""
    deadline = time.monotonic() + timeout_s
    while not check(value := get()):
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.2)
    return value
