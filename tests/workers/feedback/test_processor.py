"""Analyst verdicts reach every worker through the bank, on the real broker."""

import json
import logging
import time
from contextlib import ExitStack

import pytest

from fraud.config import ScorerSettings
from fraud.index import ReferenceIndex
from fraud.index.changelog import decode_change
from fraud.scoring.detector import Detector, effective_scorer
from fraud.scoring.verdicts import AnalystVerdict, reference_id_for
from tests.fakes import PoisonedEncoder, assess
from tests.workers.kafka_helpers import read_topic, running_processor, running_worker
from tests.workers.state.test_bank import NOVEL_SCAM
from workers.feedback import FeedbackProcessor
from workers.kafka import make_producer
from workers.producer import produce
from workers.state import BankFollower, publish_index

pytestmark = [pytest.mark.integration, pytest.mark.model]

# A genuine receipt that the seed bank flags (one of the demo's two false alerts).
LOOKALIKE = (
    "Apex Mobile: thanks, we've received your payment of £18.00. Your account is up to date."
)
SEEN = "ParcelGo: good news, your parcel from Lumen Lighting is out for delivery today."


def _send_verdicts(kafka, verdicts: list[AnalystVerdict]) -> float:
    producer = make_producer(kafka)
    try:
        for v in verdicts:
            producer.send(kafka.feedback_topic, v.to_bytes(), key=v.message_id.encode()).get(30)
    finally:
        producer.close(timeout=10)
    return time.monotonic()


def test_verdicts_reach_two_workers_within_seconds_and_change_their_scores(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    publish_index(
        kafka, ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim), tmp_path
    )
    indexes = [ReferenceIndex.load(tmp_path, model=encoder.name, dim=encoder.dim) for _ in "ab"]
    detectors = [Detector(encoder, i, effective_scorer(ScorerSettings(), i)) for i in indexes]
    before_scam, before_fp = assess(detectors[0], [NOVEL_SCAM, LOOKALIKE])
    assert not before_scam.is_alert and before_fp.is_alert  # so the test can fail
    followers = [BankFollower(kafka, i) for i in indexes]
    processor = FeedbackProcessor.open(kafka, encoder)
    try:
        with ExitStack() as stack:
            stack.enter_context(running_processor(processor))
            registries = [
                stack.enter_context(running_worker(detector, kafka, bank=follower))[1]
                for detector, follower in zip(detectors, followers, strict=True)
            ]
            produce(kafka, kafka.input_topic, [{"id": "seen-1", "text": SEEN}])
            deadline = time.monotonic() + 30
            while "seen-1" not in processor.recent.messages:  # the verdict comes after the message
                assert time.monotonic() < deadline, "the processor did not see the message"
                time.sleep(0.05)
            sent = _send_verdicts(
                kafka,
                [
                    AnalystVerdict(
                        message_id="novel-1",
                        verdict="fraud",
                        category="investment",
                        analyst="ana",
                        reason="new crypto campaign",
                        text=NOVEL_SCAM,
                    ),
                    AnalystVerdict(
                        message_id="fp-1",
                        verdict="legit",
                        analyst="ana",
                        reason="genuine receipt",
                        text=LOOKALIKE,
                    ),
                    AnalystVerdict(message_id="seen-1", verdict="legit", analyst="bo"),  # no text
                    AnalystVerdict(message_id="never-seen", verdict="fraud", analyst="bo"),
                ],
            )
            while min(f.applied for f in followers) < 3:
                assert time.monotonic() - sent < 30, [f.applied for f in followers]
                time.sleep(0.02)
            latency = time.monotonic() - sent
            produce(
                kafka,
                kafka.input_topic,
                [
                    {"id": "m-scam", "text": NOVEL_SCAM},
                    {"id": "m-fp", "text": LOOKALIKE},
                ],
            )
            records = read_topic(kafka, kafka.scores_topic, 3)
    finally:
        for follower in followers:
            follower.close()

    print(f"verdicts reached both workers {latency:.2f}s after they were sent")
    assert latency < 10  # the goal, two workers
    for registry in registries:  # each worker measured it too, from the verdicts' timestamps
        count = registry.get_sample_value("fraud_verdict_propagation_seconds_count")
        total = registry.get_sample_value("fraud_verdict_propagation_seconds_sum")
        assert count == 3 and 0 <= total / count < 10, (count, total)
    decisions = {r.key.decode(): json.loads(r.value) for r in records}
    scam, fp = decisions["m-scam"], decisions["m-fp"]
    assert scam["is_alert"] and scam["evidence"][0]["reference_id"] == reference_id_for("novel-1")
    assert scam["category"] == "investment"
    assert not fp["is_alert"]  # the false positive is cleared
    for index in indexes:
        seen = index.reference(reference_id_for("seen-1"))
        assert (seen.text, seen.label, seen.changed_by) == (SEEN, "legit", "bo")
        added = index.reference(reference_id_for("novel-1"))
        assert (added.changed_by, added.reason) == ("ana", "new crypto campaign")
    dead = read_topic(kafka, kafka.dead_letter_topic, 1)
    assert [dict(r.headers)["dead_letter_reason"] for r in dead] == [b"unknown_message"]


def _alert_citing(message_id: str, reference_id: int) -> bytes:
    """An alert as a worker would have published it, with one bank reference as evidence."""
    from fraud.schemas import Assessment, Decision, Evidence, parse_message

    message = parse_message(json.dumps({"id": message_id, "text": "x"}).encode(), 100)
    evidence = [
        Evidence(reference_id=reference_id, category="phishing", similarity=0.8, weight=0.9)
    ]
    assessment = Assessment(
        score=0.9,
        is_alert=True,
        category="phishing",
        category_distribution={"phishing": 0.9},
        evidence=evidence,
    )
    alert = Decision.build(
        message,
        assessment,
        threshold=0.5,
        model="m",
        index_version="v",
        scored_at="t",
        processing_ms=1.0,
    )
    return alert.to_bytes()


def test_a_reference_cited_by_repeated_false_positives_is_disabled_not_deleted(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings
    seed = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    publish_index(kafka, seed, tmp_path)
    worker_index = ReferenceIndex.load(tmp_path, model=encoder.name, dim=encoder.dim)
    follower = BankFollower(kafka, worker_index)
    culprit = next(i for i in range(len(seed)) if seed.reference(i).label == "fraud")
    try:
        # Two false positives that cited the culprit, judged legit one at a time, with the
        # processor restarted in between: the count survives on the citations topic.
        for n in (1, 2):
            processor = FeedbackProcessor.open(kafka, encoder, disable_after=2)
            with running_processor(processor):
                producer = make_producer(kafka)
                producer.send(kafka.alert_topic, _alert_citing(f"fp-{n}", culprit)).get(30)
                producer.close(timeout=10)
                deadline = time.monotonic() + 30
                while f"fp-{n}" not in processor.recent.decisions:
                    assert time.monotonic() < deadline, "the processor did not see the alert"
                    time.sleep(0.05)
                verdict = AnalystVerdict(
                    message_id=f"fp-{n}", verdict="legit", analyst="cy", text=f"genuine {n}"
                )
                _send_verdicts(kafka, [verdict])
                while processor.changes < 1:
                    assert time.monotonic() < deadline, "the verdict was not processed"
                    time.sleep(0.05)
            assert processor.false_positive_citations.count(culprit) == n
        deadline = time.monotonic() + 30
        while not (culprit in worker_index and worker_index.reference(culprit).disabled):
            assert time.monotonic() < deadline, "the reference was not disabled"
            follower.poll(timeout_ms=200)
    finally:
        follower.close()
    ref = worker_index.reference(culprit)
    assert ref.disabled and ref.changed_by == "cy" and "2 alerts judged legit" in ref.reason
    own_vector = worker_index.key_vectors([culprit])
    keys = worker_index.search(own_vector, 5)
    assert culprit not in keys.ids[keys.valid]  # kept in the bank, never a key again
    assert worker_index.counts()["disabled"] == 1


def test_a_processor_started_later_finds_recent_texts_by_looking_back(encoder, kafka_settings):
    kafka = kafka_settings
    produce(kafka, kafka.input_topic, [{"id": "early-1", "text": SEEN}])
    with running_processor(FeedbackProcessor.open(kafka, encoder, lookback_s=600)) as processor:
        _send_verdicts(kafka, [AnalystVerdict(message_id="early-1", verdict="legit")])
        deadline = time.monotonic() + 30
        while processor.changes < 1:
            assert time.monotonic() < deadline, "the verdict found no text"
            time.sleep(0.05)
    (record,) = read_topic(kafka, kafka.bank_topic, 1)
    ref = decode_change(record.key, record.value).reference
    assert (ref.id, ref.text, ref.label) == (reference_id_for("early-1"), SEEN, "legit")


def test_a_verdict_or_decision_that_fails_is_isolated_and_the_processor_goes_on(
    encoder, kafka_settings, caplog
):
    kafka = kafka_settings
    marker = "zq-poison"
    verdicts = [
        AnalystVerdict(message_id="v-1", verdict="fraud", category="delivery", text=NOVEL_SCAM),
        AnalystVerdict(message_id="v-2", verdict="legit", text=f"lunch at noon? {marker}"),
        AnalystVerdict(message_id="v-3", verdict="legit", text=LOOKALIKE),
    ]
    processor = FeedbackProcessor.open(kafka, PoisonedEncoder(encoder, marker))
    with caplog.at_level(logging.INFO), running_processor(processor):
        # A decision whose text the encoder fails on, for campaign tracking.
        produce(kafka, kafka.input_topic, [{"id": "d-1", "text": f"win big {marker}"}])
        producer = make_producer(kafka)
        producer.send(kafka.alert_topic, _alert_citing("d-1", 1), key=b"d-1").get(30)
        # Then three verdicts sent together, the middle one failing.
        for v in verdicts:
            producer.send(kafka.feedback_topic, v.to_bytes(), key=v.message_id.encode())
        producer.flush(30)
        producer.close(timeout=10)
        deadline = time.monotonic() + 30
        while processor.changes < 2 or processor.skipped < 1:
            assert time.monotonic() < deadline, "the verdicts and the decision were not seen"
            time.sleep(0.05)
    # The processor ran on to the end (running_processor fails the test on what it raised).
    changes = read_topic(kafka, kafka.bank_topic, 2)
    ids = {decode_change(r.key, r.value).reference.id for r in changes}
    assert ids == {reference_id_for("v-1"), reference_id_for("v-3")}
    (dead,) = read_topic(kafka, kafka.dead_letter_topic, 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dead_letter_reason"] == "scoring_error"
    assert headers["dead_letter_error"] == "InjectedFault"
    assert dead.value == verdicts[1].to_bytes()  # the verdict, kept for replay
    assert processor.skipped == 1  # the decision, logged and left out of the campaigns
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "d-1" in logged and marker not in logged  # the id and the class, never the text
