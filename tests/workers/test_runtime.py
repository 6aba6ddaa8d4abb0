"""What every process that scores shares (workers/runtime.py), without a broker or a
model: where decisions are published and under which key, the error policy, and which
index is followed."""

import logging
from types import SimpleNamespace

import pytest

from fraud.config import KafkaSettings, Settings
from fraud.errors import PublishError, SchemaError
from fraud.scoring.detector import Detector
from fraud.scoring.isolation import ModelBrokenError
from tests.fakes import RecordingProducer, consumer_record, decision
from workers import runtime
from workers.runtime import (
    DeadLetter,
    load_runtime,
    on_bad_record,
    on_publish_failed,
    publish_dead_letters,
    publish_decisions,
    records_at,
)

KAFKA = KafkaSettings(alert_topic="alerts", scores_topic="scores", dead_letter_topic="dlq")


def _sent(producer: RecordingProducer) -> list[tuple[str, bytes]]:
    return [(s["topic"], s["key"]) for s in producer.sent]


def test_an_alert_goes_to_the_alert_topic_and_every_decision_to_scores_keyed_by_id():
    producer = RecordingProducer()
    decisions = [decision("m-1", True, "delivery"), decision("m-2", False)]
    kafka = KAFKA.model_copy(update={"publish_scores": True})
    sent = publish_decisions(producer, kafka, decisions)
    assert _sent(producer) == [("alerts", b"m-1"), ("scores", b"m-1"), ("scores", b"m-2")]
    payloads = [decisions[0].to_bytes(), decisions[0].to_bytes(), decisions[1].to_bytes()]
    assert [s["value"] for s in producer.sent] == payloads  # the decision as published
    assert [(s.decision.message_id, s.topic) for s in sent] == [
        ("m-1", "alerts"),
        ("m-1", "scores"),
        ("m-2", "scores"),
    ]


def test_the_scores_topic_follows_the_workers_setting_unless_the_caller_says():
    producer = RecordingProducer()
    decisions = [decision("m-1", True, "delivery"), decision("m-2", False)]
    publish_decisions(producer, KAFKA, decisions)  # publish_scores off: alerts only
    assert _sent(producer) == [("alerts", b"m-1")]
    producer = RecordingProducer()
    publish_decisions(producer, KAFKA, decisions, scores=True)  # `fraud serve --publish`
    assert _sent(producer) == [("alerts", b"m-1"), ("scores", b"m-1"), ("scores", b"m-2")]
    producer = RecordingProducer()
    kafka = KAFKA.model_copy(update={"publish_scores": True})
    publish_decisions(producer, kafka, decisions, scores=False)  # a retroactive alert
    assert _sent(producer) == [("alerts", b"m-1")]


def test_a_record_that_does_not_decode_becomes_a_dead_letter_with_its_reason():
    record = consumer_record(b"\xff", offset=7)
    letter = on_bad_record(SchemaError("invalid_utf8", "invalid start byte"), record)
    assert letter == DeadLetter(record, "invalid_utf8", "invalid start byte", "SchemaError")


def test_a_record_whose_processing_raised_says_where_never_what_the_error_said():
    record = consumer_record(b'{"id": "m-1", "text": "secret"}')
    try:
        raise ValueError("cannot encode 'secret'")  # quotes the message, as a real one could
    except ValueError as e:
        letter = on_bad_record(e, record, "encoding message m-1")
    assert (letter.reason, letter.error_class) == ("scoring_error", "ValueError")
    assert letter.detail.startswith("encoding message m-1 raised ValueError at test_runtime.py:")
    assert "secret" not in letter.detail


@pytest.mark.parametrize("error", [ModelBrokenError("broken"), KeyboardInterrupt()])
def test_a_broken_model_or_an_interrupt_is_raised_not_dead_lettered(error):
    with pytest.raises(type(error)):
        on_bad_record(error, consumer_record())


def test_dead_letters_are_sent_with_their_reason_and_logged_where_they_came_from(caplog):
    producer = RecordingProducer()
    record = consumer_record(b"x", topic="messages", partition=2, offset=9)
    with caplog.at_level(logging.WARNING):
        publish_dead_letters(producer, KAFKA, [DeadLetter(record, "no_text", "no text field")])
    (sent,) = producer.sent
    assert sent["topic"] == "dlq" and dict(sent["headers"])["dead_letter_reason"] == b"no_text"
    assert "messages[2]@9: no_text" in caplog.text


def test_a_publish_failure_logs_which_input_records_are_not_committed(caplog):
    records = [consumer_record(partition=p, offset=o) for p, o in [(0, 3), (0, 4), (1, 8), (0, 5)]]
    assert records_at(records) == "messages[0]@3..5, messages[1]@8"
    with caplog.at_level(logging.ERROR):
        on_publish_failed(PublishError("2 records of the batch were refused"), records)
    assert "2 records of the batch were refused: input messages[0]@3..5, messages[1]@8" in (
        caplog.text
    )


def _detector(offsets: dict) -> Detector:
    return SimpleNamespace(index=SimpleNamespace(changelog_offsets=offsets))


def test_an_index_linked_to_the_bank_is_followed_and_one_that_is_not_only_when_asked(
    monkeypatch, caplog
):
    followed = []
    monkeypatch.setattr(
        runtime.BankFollower, "caught_up", classmethod(lambda cls, k, i: followed.append(i) or i)
    )
    settings = Settings()
    linked, unlinked = _detector({0: 12}), _detector({})
    monkeypatch.setattr(Detector, "from_settings", classmethod(lambda cls, s: linked))
    assert load_runtime(settings).bank is linked.index and followed == [linked.index]

    monkeypatch.setattr(Detector, "from_settings", classmethod(lambda cls, s: unlinked))
    with caplog.at_level(logging.INFO):
        assert load_runtime(settings).bank is None
    assert "is not linked to the bank topic" in caplog.text
    assert load_runtime(settings, follow_unlinked=True).bank is unlinked.index  # feedback
