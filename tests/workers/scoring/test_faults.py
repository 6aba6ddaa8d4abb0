"""Fault injection on the real broker with real `fraud worker` processes, checked by an
oracle: every input message has an id, and at the end every id has a decision on the
scores topic; duplicates stay within what the delivery mode allows.

Worker-side faults: a worker killed mid-stream, a second worker joining and leaving under
traffic, inference slower than the poll interval, sends the broker refuses. The broker's
own faults (stopped, paused, cut off) are in test_broker_faults.py.
"""

import re
import signal
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from fraud.scoring.detector import Detector
from tests.fakes import SlowEncoder
from tests.results import record_result
from tests.workers.kafka_helpers import (
    Decisions,
    freeze_inside_a_transaction,
    produce_messages,
    running_worker,
    scam_message,
    worker_metric,
    worker_settings,
)
from workers.kafka import ensure_topics, make_producer
from workers.processes import free_port, start_fraud_process, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

MESSAGES = 240
MAX_BATCH = 16


class Traffic:
    """Messages produced at `rate` per second on a thread until stop(): traffic that goes
    on while the test changes the group. `ids` holds those the broker acknowledged."""

    def __init__(self, kafka, rate: float) -> None:
        self.kafka, self.interval = kafka, 1 / rate
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = make_producer(self.kafka)
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                message_id, value = scam_message(len(self.ids), prefix="t")
                future = producer.send(self.kafka.input_topic, value, key=message_id.encode())
                future.get(timeout=30)
                self.ids.append(message_id)
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as e:  # surfaced by stop()
            self.error = e
        finally:
            producer.close(timeout=10)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert self.error is None, self.error

    def __exit__(self, *exc) -> None:
        self.stop()


def _uncommitted(kafka) -> dict[int, int]:
    """Per input partition: records after the group's committed offset."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        committed = admin.list_group_offsets({kafka.group_id: None})[kafka.group_id]
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    try:
        tps = [
            TopicPartition(kafka.input_topic, p)
            for p in consumer.partitions_for_topic(kafka.input_topic)
        ]
        end = consumer.end_offsets(tps)
    finally:
        consumer.close(autocommit=False)
    return {tp.partition: end[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps}


# What no worker log may hold. kafka-python warns "Rebalance listener ... took" when a
# rebalance callback blocks its network thread for over a second (a commit or a restore
# done there would).
LOG_PROBLEMS = re.compile(r" (ERROR|CRITICAL) |Traceback|Rebalance listener")


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_worker_killed_mid_stream_loses_nothing(
    seed_index_dir, kafka_settings, tmp_path, exactly_once
):
    kafka = kafka_settings.model_copy(
        update={
            "publish_scores": True,
            "exactly_once": exactly_once,
            "max_batch": MAX_BATCH,
            "session_timeout_ms": 6000,  # the killed worker's partitions move sooner
            "transaction_timeout_ms": 6000,  # and its open transaction is aborted sooner
        }
    )
    settings = worker_settings(kafka, seed_index_dir)
    ensure_topics(kafka, [kafka.input_topic, kafka.scores_topic])
    ids = produce_messages(kafka, MESSAGES)
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    decisions = Decisions(kafka, isolation)
    log_path = tmp_path / "workers.log"
    in_transaction: list[str] = []
    with log_path.open("w") as log:
        first = start_fraud_process("worker", settings, log)
        try:
            # Kill it once it is well into the stream: a batch is then in hand.
            seen = decisions.read_until(lambda c: len(c) >= MESSAGES // 4, timeout_s=180)
            assert len(seen) >= MESSAGES // 4, log_path.read_text()[-3000:]
            if exactly_once:
                in_transaction = freeze_inside_a_transaction(first, kafka)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            killed = time.time()
            # Everything the first worker wrote that a reader can see (read_committed: up
            # to the open transaction, which stays undecided until the broker aborts it).
            by_first = set(decisions.read_to_end())
            second = start_fraud_process("worker", settings, log)
            try:
                counts = decisions.read_until(
                    lambda c: set(ids) <= set(c) or second.poll() is not None, timeout_s=240
                )
            finally:
                stop_process(second)
            counts = decisions.read_to_end()  # a replayed batch's tail too
        finally:
            stop_process(first)
            decisions.close()

    missing = set(ids) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    by_second = decisions.written_between(killed, float("inf"))
    print(
        f"killed after {len(by_first)} decisions, {len(in_transaction)} more in its open "
        f"transaction; the restarted worker decided {len(by_second)}; {duplicates} "
        f"duplicates of {MESSAGES}"
    )
    assert not missing, f"{len(missing)} messages without a decision"
    # The kill struck mid-stream, and the restarted worker decided the rest.
    assert len(by_first) < MESSAGES
    assert set(ids) - by_first <= by_second
    if exactly_once:
        # The open transaction's decisions were aborted: a read_committed reader sees each
        # of those messages once, from the restarted worker.
        assert in_transaction, "no decision written in the transaction open at the kill"
        assert set(in_transaction) <= by_second - by_first
        assert duplicates == 0
    else:
        # At-least-once: only the batch published but not yet committed at the kill.
        assert duplicates <= MAX_BATCH
    record_result(
        "faults",
        f"worker-killed-{'exactly' if exactly_once else 'at-least'}-once",
        messages=MESSAGES,
        missing=len(missing),
        duplicates=duplicates,
        duplicate_bound=0 if exactly_once else MAX_BATCH,
        killed_after=len(by_first),
        in_transaction=len(in_transaction),
        decided_by_second=len(by_second),
    )


PARTITIONS = 3
RATE = 8  # messages per second: a flow the workers here keep up with


def test_a_worker_joining_and_leaving_under_traffic_loses_nothing(
    seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True, "max_batch": MAX_BATCH})
    ensure_topics(kafka, [kafka.input_topic], partitions=PARTITIONS)
    ensure_topics(kafka, [kafka.scores_topic])
    ports = {"first": free_port(), "second": free_port()}
    logs = {name: tmp_path / f"{name}.log" for name in ports}
    decisions = Decisions(kafka, "read_uncommitted")
    with (
        logs["first"].open("w") as first_log,
        logs["second"].open("w") as second_log,
        Traffic(kafka, RATE) as traffic,
    ):
        first = start_fraud_process(
            "worker", worker_settings(kafka, seed_index_dir, ports["first"]), first_log
        )
        try:
            seen = decisions.read_until(lambda c: len(c) >= 20, timeout_s=180)
            assert len(seen) >= 20, logs["first"].read_text()[-3000:]
            second = start_fraud_process(
                "worker", worker_settings(kafka, seed_index_dir, ports["second"]), second_log
            )
            try:
                # Joined, given partitions, and scoring some of the flow.
                deadline = time.monotonic() + 180
                while (worker_metric(ports["second"], "fraud_messages_scored_total") or 0) < 10:
                    assert time.monotonic() < deadline, logs["second"].read_text()[-3000:]
                    assert second.poll() is None, logs["second"].read_text()[-3000:]
                    time.sleep(0.5)
                second_scored = worker_metric(ports["second"], "fraud_messages_scored_total")
            finally:
                stop_process(second)  # SIGTERM: it finishes its batches, commits, leaves
            time.sleep(3)  # the flow goes on while the first worker takes everything back
            traffic.stop()
            counts = decisions.read_until(lambda c: set(traffic.ids) <= set(c), timeout_s=180)
        finally:
            stop_process(first)
        counts = decisions.read_until(lambda c: False, timeout_s=3)
        decisions.close()

    texts = {name: path.read_text() for name, path in logs.items()}
    assert first.returncode == 0 and second.returncode == 0, texts["second"][-3000:]
    missing = set(traffic.ids) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    refused = sum(t.count("lost to a rebalance") for t in texts.values())
    assignments = sum(t.count("assigned partitions") for t in texts.values())
    uncommitted = _uncommitted(kafka)
    print(
        f"join+leave: {len(traffic.ids)} messages, {len(missing)} missing, {duplicates} "
        f"duplicates; second worker scored {second_scored:.0f}; {assignments} assignments, "
        f"{refused} commits refused by a rebalance; uncommitted {uncommitted}"
    )
    assert not missing, f"{len(missing)} messages without a decision"
    # At most the batch each worker had published but not committed when a rebalance
    # moved its partitions, at the join and at the leave.
    assert duplicates <= 2 * MAX_BATCH
    for name, text in texts.items():
        problems = [line for line in text.splitlines() if LOG_PROBLEMS.search(line)]
        assert not problems, f"{name}: {problems[:5]}"
    # A commit a rebalance refused is retried for the partitions the worker kept, so once
    # both have stopped cleanly every decided record is committed: nothing to replay.
    assert set(uncommitted.values()) == {0}, uncommitted
    record_result(
        "faults",
        "worker-joins-and-leaves",
        messages=len(traffic.ids),
        missing=len(missing),
        duplicates=duplicates,
        duplicate_bound=2 * MAX_BATCH,
        partitions=PARTITIONS,
        rate=RATE,
        second_scored=int(second_scored),
        assignments=assignments,
        commits_refused=refused,
        uncommitted=sum(uncommitted.values()),
    )


def test_inference_slower_than_the_poll_interval_starts_no_rebalance(detector, kafka_settings):
    # Each encoding takes 3x max_poll_interval_ms: a worker that stopped polling while
    # it waited for one would be put out of the group at every batch (kafka-python's
    # heartbeat thread leaves once the interval has passed without a poll).
    kafka = kafka_settings.model_copy(
        update={"publish_scores": True, "max_batch": 4, "max_poll_interval_ms": 1500}
    )
    slow = Detector(
        SlowEncoder(detector.encoder, delay_s=4.5), detector.index, detector.params, detector.head
    )
    ensure_topics(kafka, [kafka.input_topic, kafka.scores_topic])
    ids = produce_messages(kafka, 12)  # three batches
    decisions = Decisions(kafka, "read_uncommitted")
    try:
        with running_worker(slow, kafka) as (worker, registry):
            decisions.read_until(lambda c: len(c) >= 1, timeout_s=60)
            settled = worker.partitions.assignments  # the join, done before the first batch
            counts = decisions.read_until(lambda c: set(ids) <= set(c), timeout_s=120)
            assignments = worker.partitions.assignments
            encode = registry.get_sample_value(
                "fraud_stage_duration_seconds_sum", {"stage": "encode"}
            ) / registry.get_sample_value("fraud_stage_duration_seconds_count", {"stage": "encode"})
    finally:
        decisions.close()
    missing = set(ids) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"slow inference: {len(ids)} messages, {len(missing)} missing, {duplicates} duplicates; "
        f"encode {encode:.1f}s a batch vs max_poll_interval 1.5s; assignments {settled} at the "
        f"first decision, {assignments} at the last"
    )
    assert encode > kafka.max_poll_interval_ms / 1000  # the fault really happened
    assert not missing
    assert settled <= 2  # the join (kafka-python's leader may rejoin once for metadata)
    assert assignments == settled, "a rebalance while the slow batches were scored"
    assert duplicates == 0
    record_result(
        "faults",
        "slow-inference",
        messages=len(ids),
        missing=len(missing),
        duplicates=duplicates,
        encode_s=round(encode, 2),
        max_poll_interval_s=kafka.max_poll_interval_ms / 1000,
        rebalances_after_first=assignments - settled,
    )


def test_a_send_the_broker_refuses_stops_the_worker_before_the_commit(
    seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True, "max_batch": MAX_BATCH})
    ensure_topics(kafka, [kafka.input_topic])
    # A scores topic that takes records of at most 100 bytes: the broker refuses every
    # decision (about 1 kB) with MessageSizeTooLargeError, after the producer's retries.
    ensure_topics(kafka, [kafka.scores_topic], configs={"max.message.bytes": "100"})
    ids = produce_messages(kafka, 8)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_fraud_process("worker", worker_settings(kafka, seed_index_dir), log)
        try:
            returncode = worker.wait(timeout=180)
        finally:
            stop_process(worker)
    text = log_path.read_text()
    uncommitted = _uncommitted(kafka)
    print(
        f"refused sends: {len(ids)} messages; worker exit code {returncode}; "
        f"uncommitted {uncommitted}"
    )
    # What the README's delivery guarantees say: it stops without committing, and the
    # batch is replayed by whoever takes the partition.
    assert returncode == 2, text[-3000:]
    assert "not acknowledged by the broker" in text and "MessageSizeTooLargeError" in text
    assert uncommitted == {0: len(ids)}, "the batch whose sends failed was committed"
    record_result(
        "faults",
        "send-refused",
        messages=len(ids),
        exit_code=returncode,
        uncommitted=sum(uncommitted.values()),
    )
