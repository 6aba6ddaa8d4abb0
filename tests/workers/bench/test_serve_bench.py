"""`fraud bench-serve` (workers/bench/serve.py) against a real `fraud serve`."""

import asyncio
import json

import pytest

from fraud.config import Settings
from tests.workers.serve.serving import (
    LEGIT,
    NOVEL_SCAM,
    SCAM,
    app_for,
    running_server,
)
from workers.bench.serve import HttpConnection, serve_bench

pytestmark = [pytest.mark.model]


def test_serve_bench_drives_a_fraud_serve_process(seed_index_dir):
    """The load generator against a real `fraud serve` process, which stops cleanly on
    SIGTERM (few requests: this checks the measurement, it is not one)."""
    settings = Settings().model_copy(update={"index_dir": seed_index_dir})
    texts = [SCAM, LEGIT, NOVEL_SCAM, "see you at the station at 6"]
    result = serve_bench(settings, texts, n_saturation=24, n_latency=12, concurrency=4)
    assert result["saturation_messages_per_s"] > 0
    latency = result["latency_at_half_saturation"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    # Memory once ready (model and index loaded), after the first request and at peak: a
    # process that loaded a transformer.
    peak = result["server_peak_rss_mib"]
    start, first = result["server_rss_mib_at_start"], result["server_rss_mib_after_first_request"]
    assert 100 < start <= peak and 100 < first <= peak
    assert result["answered"] == result["requests"] == {"saturation": 24, "latency": 12}
    assert result["server_exit_code"] == 0


def test_the_load_generators_connection_survives_the_servers_idle_timeout(detector):
    """uvicorn closes a kept-alive connection idle for its keep-alive timeout; the bench's
    client reopens it and sends the request again instead of failing the run."""
    app, _ = app_for(detector)
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
