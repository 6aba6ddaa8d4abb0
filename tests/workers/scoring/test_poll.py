"""How the scoring worker sizes its next batch (ScoringWorker.poll_batch), with a consumer
that hands out queued records: pure batching logic, no broker (the worker's batching on
the real broker: test_worker.py)."""

import time
from concurrent.futures import Future

import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from fraud.config import KafkaSettings
from fraud.metrics import build_metrics
from tests.fakes import consumer_record
from workers.scoring.batch import Batch
from workers.scoring.worker import ScoringWorker

pytestmark = [pytest.mark.model]

TOPIC = "messages"


class QueuedConsumer:
    """Hands out the records queued in it, up to max_records a poll; owns partition 0."""

    def __init__(self) -> None:
        self.queued: list = []
        self.polls: list[int] = []  # each poll's timeout_ms

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.polls.append(timeout_ms)
        out, self.queued = self.queued[:max_records], self.queued[max_records:]
        return {TopicPartition(TOPIC, 0): out} if out else {}

    def assignment(self) -> set:
        return {TopicPartition(TOPIC, 0)}


def _encoded_batch() -> Batch:
    """A batch in flight whose encoding is already done."""
    done: Future = Future()
    done.set_result(None)
    return Batch(records=[], started=time.monotonic(), encoded=done)


def test_a_batch_encoded_while_the_last_was_finished_takes_what_arrived_meanwhile(detector):
    """The batch in flight was encoded while the worker finished the one before it: the
    records that arrived meanwhile go to the encoder at once (issue 21), not after that
    batch is finished in turn, with the encoder idle."""
    consumer = QueuedConsumer()
    kafka = KafkaSettings(input_topic=TOPIC, batch_timeout_ms=5000)
    worker = ScoringWorker(detector, kafka, consumer, None, build_metrics(CollectorRegistry()))
    worker.partitions.on_partitions_assigned([TopicPartition(TOPIC, 0)])
    consumer.queued = [consumer_record(b"{}", offset=i) for i in range(3)]
    started = time.monotonic()
    batch = worker.poll_batch(_encoded_batch())
    assert [r.offset for r in batch] == [0, 1, 2]
    assert consumer.polls == [0]  # one poll that does not wait
    assert time.monotonic() - started < 1.0
    # Nothing arrived: the batch is empty at once, the encoding in flight is finished.
    assert worker.poll_batch(_encoded_batch()) == []
