"""`fraud setup`, on the real broker: topics with their partitions, the index linked, and
a user's index published rather than replaced (issue 17)."""

import csv
import json
import re
import time
import urllib.request

import pytest

from fraud.config import Settings, to_env
from fraud.data import seed_references_path
from fraud.datasets import LabeledText
from fraud.index import MANIFEST_FILE, ReferenceIndex
from tests.fakes import unit_vectors
from tests.workers.kafka_helpers import read_topic, worker_settings
from workers.kafka import partition_count
from workers.processes import free_port, start_fraud_process, stop_process
from workers.producer import produce

pytestmark = [pytest.mark.integration, pytest.mark.model]

SCAM = "URGENT: your Northbank account is locked, verify your details at nb-login.co now"


def _use_topics(monkeypatch, kafka) -> None:
    """The commands below run with this test's own topics (FRAUD_KAFKA__* variables)."""
    for key, value in to_env(Settings().model_copy(update={"kafka": kafka})).items():
        monkeypatch.setenv(key, value)


def test_setup_publishes_the_seed_set_once_then_snapshots_the_bank(
    kafka_settings, tmp_path, monkeypatch, capsys
):
    from workers.cli.main import main

    kafka = kafka_settings
    _use_topics(monkeypatch, kafka)
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
    assert a["bank"] == b["bank"] and a["bank"]["topic"] == kafka.bank_topic

    # A snapshot of the same bank may be refreshed; the user's own files stay.
    (second / "notes.txt").write_text("mine")
    assert main(["setup", "--index", str(second)]) == 0
    assert "snapshot" in capsys.readouterr().out
    assert (second / "notes.txt").read_text() == "mine"


def test_setup_refuses_to_replace_an_index_of_another_origin_with_the_bank(
    kafka_settings, tmp_path, monkeypatch, capsys
):
    from workers.cli.main import main

    _use_topics(monkeypatch, kafka_settings)
    assert main(["setup", "--index", str(tmp_path / "seed")]) == 0  # the bank is filled
    mine = tmp_path / "mine"
    own = ReferenceIndex("some-model", 4)
    own.add([LabeledText("a user's own", "fraud", "x")], unit_vectors(1, 4), "user")
    own.save(mine)
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    capsys.readouterr()

    assert main(["setup", "--index", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fraud: error: ") and "\n" not in err
    assert "refusing to replace it" in err and "--force" in err and "empty --index" in err
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before


def _user_csv(path) -> None:
    """A labeled CSV the way a user has one (UCI's columns and labels): every fourth
    reference of the seed set, so the index is visibly not the seed set's 625."""
    with seed_references_path().open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[::4]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text"])
        for row in rows:
            writer.writerow(["spam" if row["label"] == "fraud" else "ham", row["text"]])


def test_the_readmes_using_it_sequence_scores_with_the_users_index(
    kafka_settings, tmp_path, monkeypatch, capsys
):
    """README, "Using it": index build -> train -> setup -> worker. The worker must score
    with the user's index and its trained head (before the fix, setup replaced it with the
    seed set: 625 references, threshold 0.50)."""
    from workers.cli.main import main

    started = time.monotonic()
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    _use_topics(monkeypatch, kafka)
    labeled, index_dir = tmp_path / "labeled.csv", tmp_path / "uci-index"
    _user_csv(labeled)
    build = ["index", "build", "-q", "--csv", str(labeled), "--fraud-labels", "spam"]
    assert main([*build, "--legit-labels", "ham", "--out", str(index_dir)]) == 0
    assert main(["train", "--index", str(index_dir), "--target-fpr", "0.01"]) == 0
    manifest = json.loads((index_dir / MANIFEST_FILE).read_text())
    threshold = json.loads((index_dir / "head.json").read_text())["threshold"]
    references = manifest["counts"]["total"]
    assert references < 625
    capsys.readouterr()
    setup = ["setup", "--bootstrap-servers", kafka.bootstrap_servers, "--index", str(index_dir)]
    assert main(setup) == 0
    assert f"published the index in {index_dir} ({references} references)" in (
        capsys.readouterr().out
    )

    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_fraud_process("worker", worker_settings(kafka, index_dir, port), log)
        try:
            produce(kafka, kafka.input_topic, [{"id": "u-1", "text": SCAM}])
            scores = read_topic(kafka, kafka.scores_topic, 1, timeout_s=120)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                ready = json.loads(r.read())
        finally:
            stop_process(worker)
    text = log_path.read_text()
    first = re.search(
        r"scoring \S+ -> alerts \S+ \(index (\S+), (\d+) references, threshold "
        r"([\d.]+)\)",
        text,
    )
    assert first, text[-3000:]
    assert first.groups() == (manifest["index_version"], str(references), f"{threshold:.2f}")
    (decision,) = [json.loads(r.value) for r in scores]
    assert decision["message_id"] == "u-1"
    assert decision["index_version"] == manifest["index_version"]
    assert decision["threshold"] == pytest.approx(threshold)
    assert ready["scorer_reason"] == "trained_head" and ready["references"] == references
    print(f"README sequence: {time.monotonic() - started:.1f} s")


def test_readyz_of_the_worker_and_of_serve_say_which_scorer_answers_and_why(detector):
    """A trained head that no longer matches the index is not used, and both readiness
    endpoints say so (fraud/scoring/detector.py, ScorerChoice)."""
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from fraud.config import ServeSettings
    from fraud.metrics import build_serve_metrics
    from fraud.scoring.detector import Detector, ScorerChoice
    from workers.health import serve_metrics
    from workers.scoring import readiness
    from workers.serve import InlineScorer, create_app

    why = ScorerChoice("stale_head", "the trained head was trained on index version x: not used")
    stale = Detector(detector.encoder, detector.index, detector.params, None, why)
    server = serve_metrics(
        CollectorRegistry(), "127.0.0.1", 0, lambda: True, lambda: readiness(stale, True)
    )
    try:
        url = f"http://127.0.0.1:{server.server_port}/readyz"
        with urllib.request.urlopen(url, timeout=5) as r:
            worker = json.loads(r.read())
    finally:
        server.shutdown()
    assert worker["ready"] and worker["scorer"] == "attention"
    assert worker["scorer_reason"] == "stale_head" and "not used" in worker["detail"]

    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    app = create_app(
        ServeSettings(), lambda: InlineScorer(stale, metrics.scoring), registry, metrics
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while (r := client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.05)
    assert r.json()["scorer_reason"] == "stale_head" and "not used" in r.json()["scorer_detail"]
    (info,) = metrics.scoring.model_info.collect()[0].samples  # fraud_model_info
    assert info.labels["scorer"] == "attention" and info.labels["scorer_reason"] == "stale_head"
