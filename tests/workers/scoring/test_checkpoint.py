"""The commit protocol (workers/scoring/checkpoint.py), at-least-once, on recording fakes:
the steps in their order, nothing committed after a refused send, and a commit a
rebalance refused kept for the next. (Exactly-once runs against the real broker:
tests/workers/scoring/test_broker_faults.py and test_faults.py.)"""

import logging

import pytest
from kafka.errors import CommitFailedError

from fraud.config import KafkaSettings
from fraud.errors import BrokerRefusedError, BrokerUnavailableError, PublishError
from tests.fakes import RecordingConsumer, RecordingProducer, consumer_record, decision
from workers.kafka import BrokerWait
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


def test_a_renewal_waits_for_a_broker_that_is_still_starting():
    """Exactly-once, after a lost transaction: building the new producer bootstraps it,
    and a broker still restarting (BrokerUnavailableError) is waited for, not a stop."""
    attempts: list[str] = []

    def new_producer():
        attempts.append("build")
        if len(attempts) < 3:
            raise BrokerUnavailableError("the broker accepts connections but did not answer")
        return RecordingProducer()

    wait = BrokerWait(timeout_s=0.0)
    eos = KAFKA.model_copy(update={"exactly_once": True})
    checkpoint = Checkpoint(
        RecordingProducer(), RecordingConsumer(), eos, broker_wait=wait, new_producer=new_producer
    )
    checkpoint.renew()
    assert attempts == ["build"] * 3 and "init_transactions" in checkpoint.producer.calls
    assert wait.waiting  # reported as a wait on the broker meanwhile


def test_a_renewal_the_broker_refuses_stops_at_once():
    """A refused login is no outage: the renewal raises rather than waiting forever."""

    def new_producer():
        raise BrokerRefusedError("this client's login did not succeed")

    eos = KAFKA.model_copy(update={"exactly_once": True})
    checkpoint = Checkpoint(
        RecordingProducer(),
        RecordingConsumer(),
        eos,
        broker_wait=BrokerWait(timeout_s=0.0),
        new_producer=new_producer,
    )
    with pytest.raises(BrokerRefusedError):
        checkpoint.renew()
