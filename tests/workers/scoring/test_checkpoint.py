"""The commit protocol (workers/scoring/checkpoint.py), at-least-once, on recording fakes:
the steps in their order, nothing committed after a refused send, and a commit a
rebalance refused kept for the next. (Exactly-once runs against the real broker:
tests/workers/scoring/test_broker_faults.py and test_faults.py.)"""

import logging

import pytest
from kafka.errors import CommitFailedError

from fraud.config import KafkaSettings
from fraud.errors import PublishError
from tests.fakes import RecordingConsumer, RecordingProducer, consumer_record, decision
from workers.runtime import DeadLetter, StageClock
from workers.scoring import Checkpoint

KAFKA = KafkaSettings(
    input_topic="messages",
    alert_topic="alerts",
    scores_topic="scores",
    dead_letter_topic="dlq",
    history_topic="history",
    publish_scores=True,
)


class FakeHistory:
    """A HistoryState whose changed recipients are `changes`, sent as history records."""

    def __init__(self, changes: list[str]) -> None:
        self.changes = changes

    def publish_changes(self, producer) -> list:
        sent = [producer.send("history", b"state", key=r.encode()) for r in self.changes]
        self.changes = []
        return sent


def _records(*offsets: int) -> list:
    return [consumer_record(b"{}", offset=o) for o in offsets]


def test_a_batch_is_published_then_flushed_then_committed():
    producer, consumer = RecordingProducer(), RecordingConsumer()
    checkpoint = Checkpoint(producer, consumer, KAFKA, history=FakeHistory(["+44 1"]))
    records = _records(3, 4, 5)
    dead = [DeadLetter(records[1], "invalid_json", "unterminated string")]
    clock = StageClock()
    checkpoint.commit(
        [decision("m-3", True, "delivery"), decision("m-5", False)], dead, records, clock
    )
    topics = [s["topic"] for s in producer.sent]
    # Step 2: decisions and dead letters; step 3: the history changelog; then 4 and 5.
    assert topics == ["alerts", "scores", "scores", "dlq", "history"]
    assert producer.calls == ["send"] * 5 + ["flush"]
    assert [{tp.partition: o for tp, o in c.items()} for c in consumer.commits] == [{0: 6}]
    assert set(clock.seconds) == {"publish", "commit"}


def test_a_refused_send_commits_nothing_and_says_which_input_is_replayed(caplog):
    producer = RecordingProducer(refused=frozenset({"alerts"}))
    consumer = RecordingConsumer()
    checkpoint = Checkpoint(producer, consumer, KAFKA)
    with caplog.at_level(logging.ERROR), pytest.raises(PublishError, match="not acknowledged"):
        checkpoint.commit([decision("m-3", True, "delivery")], [], _records(3, 4))
    assert consumer.commits == []
    assert "input messages[0]@3..4 not committed" in caplog.text


def test_a_commit_a_rebalance_refused_goes_again_with_the_next():
    consumer = RecordingConsumer(refusals=[CommitFailedError("rebalancing")])
    checkpoint = Checkpoint(RecordingProducer(), consumer, KAFKA)
    checkpoint.commit([], [], _records(0, 1))
    assert consumer.commits == [] and checkpoint.unsaved  # kept
    checkpoint.commit_offsets([])  # the worker's idle retry
    assert [{tp.partition: o for tp, o in c.items()} for c in consumer.commits] == [{0: 2}]
    assert not checkpoint.unsaved


def test_a_bank_change_checkpoint_publishes_the_changed_histories_before_committing():
    producer, consumer = RecordingProducer(), RecordingConsumer()
    history = FakeHistory(["+44 1", "+44 2"])
    checkpoint = Checkpoint(producer, consumer, KAFKA, history=history)
    checkpoint.commit([], [], [])
    assert [s["key"] for s in producer.sent] == [b"+44 1", b"+44 2"]
    assert producer.calls == ["send", "send", "flush"]
    assert consumer.commits == [{}]  # nothing of the input to commit
