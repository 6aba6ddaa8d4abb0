"""Small helpers for tests on the real broker: write raw records, read a topic back, run
`fraud worker` processes and check their decisions (the fault tests' oracle)."""

import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fraud.config import HistorySettings, KafkaSettings, Settings
from fraud.metrics import build_metrics
from fraud.scoring.history import RecipientHistory
from workers.kafka import (
    connection_config,
    ensure_history_topic,
    ensure_topics,
    make_consumer,
    make_producer,
    partition_count,
)
from workers.scoring import ScoringWorker
from workers.state import HistoryState


def own_topics(bootstrap_servers: str, **changes) -> KafkaSettings:
    """Settings with topics and a group of their own, so tests never see each other."""
    run = uuid.uuid4().hex[:10]
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        input_topic=f"t-{run}-in",
        alert_topic=f"t-{run}-alerts",
        scores_topic=f"t-{run}-scores",
        dead_letter_topic=f"t-{run}-dlq",
        bank_topic=f"t-{run}-bank",
        feedback_topic=f"t-{run}-feedback",
        history_topic=f"t-{run}-history",
        campaign_topic=f"t-{run}-campaigns",
        citation_topic=f"t-{run}-citations",
        group_id=f"g-{run}",
        **{"batch_timeout_ms": 100, **changes},
    )


def send_raw(kafka: KafkaSettings, topic: str, values: list[bytes | None]) -> None:
    producer = make_producer(kafka)
    try:
        futures = [producer.send(topic, value) for value in values]
        producer.flush(30)
        for f in futures:
            f.get(timeout=0)
    finally:
        producer.close(timeout=10)


def scam_message(i: int, prefix: str = "m") -> tuple[str, bytes]:
    """Message number i, well formed: its id (<prefix>-<i>) and its JSON."""
    message_id = f"{prefix}-{i}"
    value = {"id": message_id, "text": f"message {i}: your parcel fee is due, pay now"}
    return message_id, json.dumps(value).encode()


def produce_messages(kafka: KafkaSettings, n: int, first: int = 0) -> list[str]:
    """n messages on the input topic, keyed by their ids m-<first> onwards."""
    producer = make_producer(kafka)
    ids = []
    try:
        for i in range(first, first + n):
            message_id, value = scam_message(i)
            producer.send(kafka.input_topic, value, key=message_id.encode())
            ids.append(message_id)
        producer.flush(30)
    finally:
        producer.close(timeout=10)
    return ids


class Decisions:
    """Reads the scores topic as a subscriber would (read_committed in exactly-once mode):
    how many decisions each message id has, and when each decision was written (`written`:
    per id, the record timestamps, i.e. the worker's send times, in ms)."""

    def __init__(self, kafka: KafkaSettings, isolation_level: str = "read_uncommitted") -> None:
        # Back within a second of a broker that returns (make_consumer's backoff), so no
        # reconnect delay of this reader's is charged to the worker's recovery time.
        self.consumer = make_consumer(kafka, group_id=None, isolation_level=isolation_level)
        tp = TopicPartition(kafka.scores_topic, 0)
        self.consumer.assign([tp])
        self.consumer.seek_to_beginning(tp)
        self.tp = tp
        self.counts: Counter[str] = Counter()
        self.written_ms: list[int] = []  # each decision's record timestamp (its send time)
        self.written: dict[str, list[int]] = {}

    def _poll(self, timeout_ms: int) -> None:
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for r in records:
                key = r.key.decode()
                self.counts[key] += 1
                self.written_ms.append(r.timestamp)
                self.written.setdefault(key, []).append(r.timestamp)

    def read_until(self, done, timeout_s: float) -> Counter:
        deadline = time.monotonic() + timeout_s
        while not done(self.counts) and time.monotonic() < deadline:
            self._poll(300)
        return self.counts

    def read_to_end(self, timeout_s: float = 30) -> Counter:
        """Everything on the topic now (for read_committed: up to its last stable offset),
        without waiting for more: once the workers stopped, the duplicates are all there."""
        end = self.consumer.end_offsets([self.tp])[self.tp]
        deadline = time.monotonic() + timeout_s
        while self.consumer.position(self.tp) < end and time.monotonic() < deadline:
            self._poll(300)
        return self.counts

    def written_between(self, start: float, end: float) -> set[str]:
        """Ids with a decision sent in [start, end) (time.time() seconds)."""
        return {
            key
            for key, stamps in self.written.items()
            if any(start <= ms / 1000 < end for ms in stamps)
        }

    def first_written_after(self, at: float) -> float | None:
        """Seconds from `at` (time.time()) to the first decision sent after it, if any."""
        after = [ms / 1000 for ms in self.written_ms if ms / 1000 >= at]
        return min(after) - at if after else None

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def freeze_inside_a_transaction(worker, kafka: KafkaSettings, timeout_s: float = 60) -> list[str]:
    """Freeze `worker` (an exactly-once `fraud worker` process, SIGSTOP) while one of its
    transactions is open, and return the ids of the decisions that transaction has written:
    they are on the scores topic, not committed. The caller kills it, or strikes the
    broker and lets it go on (SIGCONT).

    A batch's transaction is open only while it is published (milliseconds of each
    batch), so the worker is frozen and looked at, again and again: the scores topic's last
    stable offset (what read_committed readers get) below its end (what read_uncommitted
    readers get) means written records of an undecided transaction. A transaction just
    committed also shows that until the broker writes its markers, so a frozen worker's
    open transaction must still show it a moment later.
    """
    tp = TopicPartition(kafka.scores_topic, 0)
    committed = make_consumer(kafka, group_id=None, isolation_level="read_committed")
    uncommitted = make_consumer(kafka, group_id=None, isolation_level="read_uncommitted")

    def stable_and_end() -> tuple[int, int]:
        return committed.end_offsets([tp])[tp], uncommitted.end_offsets([tp])[tp]

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < deadline, f"no open transaction seen in {timeout_s}s"
            worker.send_signal(signal.SIGSTOP)
            stable, end = stable_and_end()
            if stable < end:
                time.sleep(0.3)
                if stable_and_end()[0] == stable:
                    break
            worker.send_signal(signal.SIGCONT)
            time.sleep(random.uniform(0, 0.05))  # noqa: S311 (a moment, not a secret)
        uncommitted.assign([tp])
        uncommitted.seek(tp, stable)
        written: list[str] = []
        while uncommitted.position(tp) < end:
            for records in uncommitted.poll(timeout_ms=500).values():
                written += [r.key.decode() for r in records if r.offset < end]
        return written
    finally:
        committed.close(autocommit=False)
        uncommitted.close(autocommit=False)


def worker_metric(port: int, name: str) -> float | None:
    """A label-less sample from a worker process's /metrics (None while it is not serving)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return None


def worker_status(port: int, path: str) -> tuple[int | None, str]:
    """A worker's /healthz or /readyz: (HTTP status, body; /readyz's JSON `status`, why it is
    ready or not); (None, why) when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            status, body = r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode().strip()
    except OSError as e:
        return None, str(e)
    return status, json.loads(body)["status"] if path == "/readyz" else body


def worker_settings(kafka: KafkaSettings, index_dir: Path, metrics_port: int = 0) -> Settings:
    """A `fraud worker`'s settings: `kafka`, the index at `index_dir`, metrics on a port of
    its own (0: a free one)."""
    return Settings().model_copy(
        update={"kafka": kafka, "index_dir": index_dir, "metrics_port": metrics_port}
    )


def read_topic(
    kafka: KafkaSettings, topic: str, at_least: int, timeout_s: float = 60
) -> list[ConsumerRecord]:
    """Every record of partition 0 of `topic` from the start, once `at_least` have arrived."""
    consumer = make_consumer(kafka, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < at_least and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # Anything beyond `at_least` that is already there (a duplicate would show here).
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def committed_offset(kafka: KafkaSettings, topic: str) -> int | None:
    admin = KafkaAdminClient(**connection_config(kafka))
    try:
        offsets = admin.list_group_offsets({kafka.group_id: None})[kafka.group_id]
    finally:
        admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return None if meta is None else meta.offset


def wait_for_commit(kafka: KafkaSettings, topic: str, offset: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    committed = None
    while time.monotonic() < deadline:
        try:
            committed = committed_offset(kafka, topic)
        except KafkaError as e:  # e.g. the coordinator still loading on a fresh broker
            if not e.retriable:
                raise
            committed = None
        if committed is not None and committed >= offset:
            return committed
        time.sleep(0.3)
    raise AssertionError(f"committed offset {committed}, expected {offset} within {timeout_s}s")


@contextmanager
def running_worker(
    detector, kafka: KafkaSettings, bank=None, history: HistorySettings | None = None
):
    """A ScoringWorker on its own thread, stopped (batch finished, committed) on exit;
    with `history`, it keeps the recipients' history on the history topic."""
    # Every topic the worker writes, as `fraud worker` creates them: a topic left to the
    # broker's auto-creation can keep a producer waiting for its metadata.
    outputs = [
        kafka.alert_topic,
        kafka.dead_letter_topic,
        *[kafka.scores_topic] * kafka.publish_scores,
    ]
    ensure_topics(kafka, [kafka.input_topic, *outputs])
    state = None
    if history is not None:
        ensure_history_topic(kafka, partition_count(kafka, kafka.input_topic))
        state = HistoryState(kafka, RecipientHistory(history))
    registry = CollectorRegistry()
    consumer, producer = make_consumer(kafka), make_producer(kafka)
    worker = ScoringWorker(
        detector, kafka, consumer, producer, build_metrics(registry), bank, state
    )
    try:
        with _on_thread(worker.run, worker.stop, "worker", join_s=60):
            yield worker, registry
    finally:
        producer.close(timeout=10)
        consumer.close(autocommit=False)


@contextmanager
def running_processor(processor):
    """A FeedbackProcessor on its own thread, stopped and closed on exit; what it raised
    fails the test."""
    try:
        with _on_thread(processor.run, processor.stop, "processor", join_s=30):
            yield processor
    finally:
        processor.close()


@contextmanager
def _on_thread(run, stop, name: str, join_s: float):
    """Run `run` on a thread; on exit `stop` it and wait up to join_s. What it raised, or
    a thread that would not stop, fails the test."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as e:  # surfaced in the test thread below
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(join_s)
    assert not thread.is_alive(), f"{name} did not stop"
    assert not errors, errors
