"""Fault injection on the real broker with real `fraud worker` processes, checked by an
oracle: every input message has an id, and at the end every id has a decision on the
scores topic; duplicates stay within what the delivery mode allows.

Issue 8 lists more faults (the broker stopped or paused, a network cut, a rebalance under
traffic, slow inference, failed sends); this file starts with a worker killed mid-stream.
The broker's own faults (stopped, paused, cut off) are in test_broker_faults.py.
"""

import signal

import pytest

from fraud.config import Settings
from tests.workers.kafka_helpers import Decisions, produce_messages, start_worker
from workers.kafka_clients import ensure_topics
from workers.processes import stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

MESSAGES = 240
MAX_BATCH = 16


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
    ids = produce_messages(kafka, MESSAGES)
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    decisions = Decisions(kafka, isolation)
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log:
        first = start_worker(settings, log)
        try:
            # Kill it once it is well into the stream: a batch is then in hand.
            seen = decisions.read_until(lambda c: len(c) >= MESSAGES // 4, timeout_s=180)
            killed_at = len(seen)
            assert killed_at >= MESSAGES // 4, log_path.read_text()[-3000:]
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            second = start_worker(settings, log)
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
