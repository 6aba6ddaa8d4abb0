"""One failing message never stops a worker: real `fraud worker` processes on the real
broker, with the real model and the seed index, and a fault injected for chosen messages
(tests/workers/faulty_worker.py wraps the detector the worker builds)."""

import json
import re
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraud.schemas import Decision
from tests.results import record_result
from tests.workers.kafka_helpers import (
    committed_offset,
    read_topic,
    send_raw,
    wait_for_commit,
    worker_settings,
)
from workers.kafka import ensure_topics
from workers.processes import free_port, start_fraud_process, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

FAULTY = ("-m", "tests.workers.faulty_worker")
ENCODE_POISON = "zq-encode-poison"
SCORE_POISON = "zq-score-poison"
SCAM = "Royal Mail: your parcel is held at the depot, pay the 1.99 GBP fee at rm-redeliver.info"


def _message(i: int, text: str, recipient: str) -> dict:
    return {"id": f"m-{i}", "text": text, "recipient": recipient}


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        page = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def _wait_for_commit(kafka, offset: int, worker, log_path, timeout_s: float) -> None:
    """wait_for_commit, failing at once if the worker exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert worker.poll() is None, log_path.read_text()[-3000:]
        try:
            wait_for_commit(kafka, kafka.input_topic, offset, timeout_s=1)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return r.status == 200


def test_a_message_that_fails_to_encode_or_score_is_dead_lettered_and_the_worker_goes_on(
    seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    messages = [_message(i, f"see you at {i} pm, bring the keys", f"r-{i % 4}") for i in range(24)]
    # In the same batch: one message the encoder fails on, one the scorer fails on, and
    # one whose decision fails after its scoring put it in its recipient's history,
    # between two scams to the same recipient (r-h) that have it as a history key.
    messages[5]["text"] = f"lunch at noon? {ENCODE_POISON}"
    messages[11]["text"] = f"call me back {SCORE_POISON}"
    messages[15] = _message(15, SCAM, "r-h")
    messages[17] = _message(17, SCAM.replace("1.99", "2.99"), "r-h")
    messages[20] = _message(20, SCAM.replace("1.99", "3.49"), "r-h")
    poisoned = {"m-5": "InjectedEncodingFault", "m-11": "InjectedScoringFault"}
    poisoned["m-17"] = "InjectedDecisionFault"
    values = [json.dumps(m).encode() for m in messages]
    ensure_topics(kafka, [kafka.input_topic])
    send_raw(kafka, kafka.input_topic, values)  # there before the worker starts: one batch
    port = free_port()
    log_path = tmp_path / "worker.log"
    command = (*FAULTY, "--encode-poison", ENCODE_POISON, "--score-poison", SCORE_POISON)
    with log_path.open("w") as log:
        worker = start_fraud_process(
            "worker",
            worker_settings(kafka, seed_index_dir, port),
            log,
            (*command, "--decision-poison", "m-17"),
        )
        try:
            _wait_for_commit(kafka, len(values), worker, log_path, timeout_s=180)
            # A later batch, with the encoder's poison again: the worker is still at work.
            later = [_message(30, "on my way", "r-0"), _message(31, ENCODE_POISON, "r-1")]
            poisoned["m-31"] = "InjectedEncodingFault"
            send_raw(kafka, kafka.input_topic, [json.dumps(m).encode() for m in later])
            values += [json.dumps(m).encode() for m in later]
            _wait_for_commit(kafka, len(values), worker, log_path, timeout_s=60)
            alive = worker.poll() is None
            healthy = _healthy(port)
            samples = _metrics(port)
        finally:
            stop_process(worker)
    text = log_path.read_text()
    assert alive and healthy, text[-3000:]
    assert worker.returncode == 0, text[-3000:]  # and it stopped cleanly on SIGTERM

    decided = len(values) - len(poisoned)
    scores = read_topic(kafka, kafka.scores_topic, decided)
    decisions = {r.key.decode(): Decision.from_bytes(r.value) for r in scores}
    expected = {json.loads(v)["id"] for v in values} - set(poisoned)
    assert len(scores) == len(decisions) and set(decisions) == expected
    dead = read_topic(kafka, kafka.dead_letter_topic, len(poisoned))
    assert len(dead) == len(poisoned)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        message_id = json.loads(record.value)["id"]
        assert headers["dead_letter_reason"] == "scoring_error"
        assert headers["dead_letter_error"] == poisoned[message_id]
        assert record.value == values[int(headers["source_offset"])]  # the original bytes
        assert ENCODE_POISON not in headers["dead_letter_detail"]
    # The scam whose decision failed left no history behind: the scam after it, to the same
    # recipient, has the one before it as a key, never the failed one.
    history = {e.message_id for e in decisions["m-20"].evidence if e.source == "history"}
    assert history == {"m-15"}, decisions["m-20"].evidence

    def sample(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    failures = sample("fraud_batch_failures_total", outcome="isolated")
    classes = sorted(dict(r.headers)["dead_letter_error"].decode() for r in dead)
    print(
        f"poisoned messages: {len(values)} sent, {len(decisions)} decided, {len(dead)} "
        f"dead-lettered ({', '.join(classes)}); {failures:.0f} batch failures isolated; "
        f"worker alive {alive}, healthy {healthy}"
    )
    assert sample("fraud_dead_letters_total", reason="scoring_error") == len(poisoned)
    assert sample("fraud_messages_scored_total") == decided
    assert failures >= 3  # encoding and scoring of the first batch, encoding of the later
    assert sample("fraud_batch_failures_total", outcome="fatal") == 0
    # Never the text: the injected exceptions quote it, the worker logs their class only.
    assert ENCODE_POISON not in text and SCORE_POISON not in text and "2.99" not in text
    record_result(
        "faults",
        "one-message-fails",
        messages=len(values),
        decided=len(decisions),
        duplicates=len(scores) - len(decisions),
        dead_lettered=len(dead),
        batch_failures_isolated=int(failures),
        alive=alive,
        healthy=healthy,
    )


def test_an_encoder_failing_on_every_message_stops_the_worker_without_committing(
    seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    values = [json.dumps(_message(i, f"see you at {i} pm", "r")).encode() for i in range(6)]
    ensure_topics(kafka, [kafka.input_topic])
    send_raw(kafka, kafka.input_topic, values)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_fraud_process(
            "worker", worker_settings(kafka, seed_index_dir), log, (*FAULTY, "--broken")
        )
        try:
            returncode = worker.wait(timeout=180)
        finally:
            stop_process(worker)
    text = log_path.read_text()
    committed = committed_offset(kafka, kafka.input_topic)
    dead = read_topic(kafka, kafka.dead_letter_topic, 0, timeout_s=2)
    print(
        f"broken encoder: {len(values)} messages; exit code {returncode}; committed offset "
        f"{committed}; {len(dead)} dead letters"
    )
    assert returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    (line,) = [line for line in text.splitlines() if line.startswith("fraud: error:")]
    assert "known-good probe" in line and "InjectedEncodingFault" in line
    assert re.search(r"encoding a batch of \d+ messages failed", text)  # it struck a batch
    assert committed is None  # nothing committed
    assert dead == []  # nothing emptied into the dead-letter topic either
    assert read_topic(kafka, kafka.scores_topic, 0, timeout_s=2) == []
    record_result(
        "faults",
        "encoder-fails-on-every-message",
        messages=len(values),
        exit_code=returncode,
        committed=committed,
        dead_lettered=len(dead),
    )
