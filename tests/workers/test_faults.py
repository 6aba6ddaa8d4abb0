"""Fault injection on the real broker with real `fraud worker` processes, checked by an
oracle: every input message has an id, and at the end every id has a decision on the
scores topic; duplicates stay within what the delivery mode allows.

Issue 8 lists more faults (the broker stopped or paused, a network cut, a rebalance under
traffic, slow inference, failed sends); this file starts with a worker killed mid-stream.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.config import Settings, to_env
from workers.kafka_clients import ensure_topics, make_producer
from workers.processes import stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

MESSAGES = 240
MAX_BATCH = 16


def _produce(kafka, n: int) -> list[str]:
    producer = make_producer(kafka)
    ids = [f"m-{i}" for i in range(n)]
    try:
        for i, message_id in enumerate(ids):
            value = {"id": message_id, "text": f"message {i}: your parcel fee is due, pay now"}
            producer.send(kafka.input_topic, json.dumps(value).encode(), key=message_id.encode())
        producer.flush(30)
    finally:
        producer.close(timeout=10)
    return ids


class Decisions:
    """Reads the scores topic as a subscriber would (read_committed in exactly-once mode)."""

    def __init__(self, kafka, isolation_level: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level=isolation_level,
        )
        tp = TopicPartition(kafka.scores_topic, 0)
        self.consumer.assign([tp])
        self.consumer.seek_to_beginning(tp)
        self.counts: Counter[str] = Counter()

    def read_until(self, done, timeout_s: float) -> Counter:
        deadline = time.monotonic() + timeout_s
        while not done(self.counts) and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=300).values():
                self.counts.update(r.key.decode() for r in records)
        return self.counts

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def _start_worker(settings: Settings, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fraud.cli", "worker"],
        env={**os.environ, **to_env(settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_worker_killed_mid_stream_loses_nothing(
    seed_index_dir, kafka_settings, tmp_path, exactly_once
):
    kafka = kafka_settings.model_copy(
        update={"publish_scores": True, "exactly_once": exactly_once, "max_batch": MAX_BATCH}
    )
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": seed_index_dir, "metrics_port": 0}
    )
    ensure_topics(kafka, [kafka.input_topic, kafka.scores_topic])
    ids = _produce(kafka, MESSAGES)
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    decisions = Decisions(kafka, isolation)
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log:
        first = _start_worker(settings, log)
        try:
            # Kill it once it is well into the stream: a batch is then in hand.
            seen = decisions.read_until(lambda c: len(c) >= MESSAGES // 4, timeout_s=180)
            killed_at = len(seen)
            assert killed_at >= MESSAGES // 4, log_path.read_text()[-3000:]
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            second = _start_worker(settings, log)
            try:
                counts = decisions.read_until(lambda c: set(ids) <= set(c), timeout_s=240)
            finally:
                stop_process(second)
            # Anything still arriving (a replayed batch's tail) is counted too.
            counts = decisions.read_until(lambda c: False, timeout_s=3)
        finally:
            stop_process(first)
            decisions.close()

    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} messages without a decision"
    duplicates = sum(n - 1 for n in counts.values())
    print(f"killed after {killed_at} decisions; {duplicates} duplicates of {MESSAGES}")
    if exactly_once:
        assert duplicates == 0
    else:
        # At-least-once: only the batch published but not yet committed at the kill.
        assert duplicates <= MAX_BATCH
