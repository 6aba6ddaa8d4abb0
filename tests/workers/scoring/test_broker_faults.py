"""The broker's faults, survived by a running `fraud worker` process on its own: the broker
stopped and started again (at-least-once and exactly-once), paused past the clients'
request timeout, and cut off from the worker by the network for longer than the group's
session timeout. Each test has a broker of its own (the session's is not stopped).

Every outage (OUTAGE_S) is longer than the worker's flush timeout (FLUSH_TIMEOUT_MS), the
clients' request timeout and the group's session timeout, and strikes while the worker has
a batch in hand: it must wait for the broker rather than stop, report the wait on /readyz
and fraud_broker_waiting while staying alive on /healthz, and resume.

The oracle, as in test_faults.py: every input message has an id, and at the end every id
has a decision on the scores topic; the worker was never restarted. Half the messages are
sent before the fault, a quarter while the broker is away (they wait in the test's
producer) and a quarter after it. At-least-once allows duplicates (a batch published but
not committed when the fault struck): at most one batch; exactly-once, none for a
read_committed reader.

Each prints one line for the README's table: the messages, when the fault struck, what was
missing, the duplicates, and the recovery time: from the fault's end (the broker answering
again, the link restored) to the first decision the worker sent after it (the record's
timestamp), and to the last message decided.
"""

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from kafka import KafkaAdminClient

from fraud.config import KafkaSettings
from tests.results import record_result
from tests.workers.kafka_helpers import (
    Decisions,
    freeze_inside_a_transaction,
    own_topics,
    scam_message,
    worker_metric,
    worker_settings,
    worker_status,
)
from tests.workers.tcp_proxy import TcpProxy
from workers.broker import LocalBroker
from workers.kafka import connection_config, ensure_topics, make_producer
from workers.processes import FRAUD_COMMAND, free_port, start_fraud_process, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

MESSAGES = 160
MAX_BATCH = 16
REQUEST_TIMEOUT_MS = 5_000
SESSION_TIMEOUT_MS = 6_000  # the broker's smallest (group.min.session.timeout.ms)
FLUSH_TIMEOUT_MS = 2_000
OUTAGE_S = 8.0  # how long a fault lasts: longer than each of the three above


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as broker:
        yield broker


class Feed:
    """The test's producer of input messages, m-0 onwards: it stays open across the fault,
    so messages sent while the broker is away wait in it and are delivered afterwards."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka, self.producer, self.ids = kafka, make_producer(kafka), []

    def send(self, n: int) -> list:
        futures = []
        for i in range(len(self.ids), len(self.ids) + n):
            message_id, value = scam_message(i)
            futures.append(
                self.producer.send(self.kafka.input_topic, value, key=message_id.encode())
            )
            self.ids.append(message_id)
        return futures

    def close(self) -> None:
        self.producer.close(timeout=10)


@dataclass
class Health:
    """What the worker's endpoints said while the broker was away."""

    readyz: set[tuple[int | None, str]]
    healthz: set[int | None]
    waiting_gauge: set[float | None]

    def watch(self, port: int, until: float) -> None:
        while time.time() < until:
            status, body = worker_status(port, "/readyz")
            self.readyz.add((status, body.split(" for ")[0]))
            self.healthz.add(worker_status(port, "/healthz")[0])
            self.waiting_gauge.add(worker_metric(port, "fraud_broker_waiting"))
            time.sleep(0.25)


def _survives(
    kafka: KafkaSettings,
    seed_index_dir,
    tmp_path,
    name: str,
    strike: Callable[[subprocess.Popen], None],
    heal: Callable[[], None],
    exactly_once: bool = False,
    recovered: Callable[[], None] = lambda: None,
) -> str:
    """Start a worker on the first half of the messages; once it has decided a batch, strike
    it with `strike(worker)`, send a quarter of the messages, keep the fault for OUTAGE_S while
    watching its health endpoints, `heal`, send the last quarter; check that it decides
    every message without being restarted (`recovered` is called then, the worker still
    running). Returns the worker's log."""
    kafka = kafka.model_copy(
        update={
            "publish_scores": True,
            "max_batch": MAX_BATCH,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "flush_timeout_ms": FLUSH_TIMEOUT_MS,
            "exactly_once": exactly_once,
        }
    )
    port = free_port()
    settings = worker_settings(kafka, seed_index_dir, port)
    ensure_topics(kafka, [kafka.input_topic, kafka.scores_topic])
    feed = Feed(kafka)
    feed.send(MESSAGES // 2)
    feed.producer.flush(30)
    decisions = Decisions(kafka, "read_committed" if exactly_once else "read_uncommitted")
    health = Health(set(), set(), set())
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        # Exactly-once: each batch's transaction stays open a while (a slow broker), so
        # the strike finds one open (freeze_inside_a_transaction).
        slow = ("-m", "tests.workers.faulty_worker", "--slow-commit", "0.5")
        command = slow if exactly_once else FRAUD_COMMAND
        worker = start_fraud_process("worker", settings, log, command)
        try:
            # One batch decided: the worker is scoring, with the rest of the half in hand.
            started = lambda c: len(c) >= MAX_BATCH or worker.poll() is not None  # noqa: E731
            struck_at = len(decisions.read_until(started, 180))
            assert struck_at >= MAX_BATCH, log_path.read_text()[-3000:]
            began = time.time()
            strike(worker)
            during = feed.send(MESSAGES // 4)
            during_ids = set(feed.ids[-len(during) :])
            health.watch(port, until=began + OUTAGE_S)
            # Decisions on what was sent meanwhile can come as soon as the broker answers,
            # which may be before heal() returns (a restart waits until the broker is
            # ready): "after" counts from the moment the fault starts to end.
            healing = time.time()
            heal()
            ended = time.time()
            feed.producer.flush(60)
            assert all(f.succeeded() for f in during), "sent during the outage, not delivered"
            feed.send(MESSAGES - len(feed.ids))
            feed.producer.flush(30)
            decisions.read_until(
                lambda c: set(feed.ids) <= set(c) or worker.poll() is not None, timeout_s=120
            )
            all_decided_s = time.time() - ended
            recovered()
            exited = worker.poll()
            waits = worker_metric(port, "fraud_broker_waits_total")
            ready_after = _wait_ready(port)
        finally:
            stop_process(worker)
            feed.close()
        counts = decisions.read_to_end()  # the worker has stopped: every duplicate is there
        decisions.close()

    worker_log = log_path.read_text()
    assert exited is None, (
        f"the worker exited ({exited}) instead of recovering:\n" + (worker_log[-3000:])
    )
    missing = set(feed.ids) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    before = decisions.written_between(0, began)
    after = decisions.written_between(healing, float("inf"))
    # Seconds from the end of heal() to the first decision after the fault (negative: the
    # worker was deciding again before the restart had returned).
    first = decisions.first_written_after(healing)
    first_s = None if first is None else first - (ended - healing)
    print(
        f"\nFAULT {name}: {MESSAGES} messages, struck after {struck_at} decisions, for "
        f"{ended - began:.1f} s, {len(during_ids)} sent meanwhile; missing {len(missing)}, "
        f"duplicates {duplicates}; waits on the broker {waits}, /readyz meanwhile "
        f"{sorted(health.readyz, key=str)}; after the fault's end: first decision "
        f"{first_s if first_s is None else round(first_s, 1)} s, all decided "
        f"{all_decided_s:.1f} s; transactions lost and scored again: "
        f"{worker_log.count('transaction was lost')}; the worker's own warnings: "
        f"{worker_log.count(' WARNING workers.')}"
    )
    assert not missing, f"{len(missing)} messages without a decision:\n{worker_log[-3000:]}"
    assert len(before) >= MAX_BATCH and after, "decisions both before and after the fault"
    assert during_ids <= after, "messages sent during the outage were decided after it"
    # The fault struck a batch in hand, and outlasted the flush timeout: the worker said it
    # was waiting on the broker (not ready, still alive) and went on once it was back.
    assert waits is not None and waits >= 1, worker_log[-3000:]
    assert (503, "waiting on the broker") in health.readyz, health.readyz
    assert health.healthz == {200}, health.healthz
    assert 1.0 in health.waiting_gauge, health.waiting_gauge
    assert ready_after == (200, "ready")
    assert (duplicates == 0) if exactly_once else (duplicates <= MAX_BATCH)
    record_result(
        "faults",
        name,
        messages=MESSAGES,
        missing=len(missing),
        duplicates=duplicates,
        duplicate_bound=0 if exactly_once else MAX_BATCH,
        struck_after=struck_at,
        outage_s=round(ended - began, 1),
        sent_during=len(during_ids),
        broker_waits=waits,
        first_decision_s=round(first_s, 1),
        all_decided_s=round(all_decided_s, 1),
        transactions_lost=worker_log.count("transaction was lost"),
        worker_warnings=worker_log.count(" WARNING workers."),
    )
    return worker_log


def _wait_ready(port: int, timeout_s: float = 30) -> tuple[int | None, str]:
    deadline = time.monotonic() + timeout_s
    while (status := worker_status(port, "/readyz"))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


@pytest.mark.parametrize(
    ("how", "exactly_once"),
    [("sigterm", False), ("sigkill", False), ("sigkill", True)],
    ids=["sigterm", "sigkill", "sigkill-exactly-once"],
)
def test_the_broker_stopped_and_started_again_loses_nothing(
    broker, seed_index_dir, tmp_path, how, exactly_once
):
    """A controlled shutdown (SIGTERM) or a crash (SIGKILL); the broker comes back on the
    same port with the same data after OUTAGE_S (plus its start-up).

    Exactly-once: the broker is killed while a transaction of the worker's is open (the
    worker frozen meanwhile), and comes back after its transaction_timeout_ms: the broker
    aborts that transaction and fences the worker's producer. The worker must score the
    batch again (TransactionLost), and a read_committed reader sees every decision once."""
    kafka = own_topics(broker.bootstrap_servers)
    in_transaction: list[str] = []

    def strike(worker: subprocess.Popen) -> None:
        if exactly_once:
            in_transaction.extend(freeze_inside_a_transaction(worker, kafka))
        broker.stop(keep_data=True) if how == "sigterm" else broker.kill()
        worker.send_signal(signal.SIGCONT)

    log = _survives(
        kafka,
        seed_index_dir,
        tmp_path,
        f"broker {how} + restart{', exactly-once' if exactly_once else ''}",
        strike,
        broker.start,
        exactly_once=exactly_once,
    )
    assert "ECONNREFUSED" in log  # the worker did try the broker while it was down
    if exactly_once:
        assert in_transaction, "no decision written in the transaction open at the fault"
        assert "scoring its records again from the committed offsets" in log, log[-3000:]


def test_the_broker_paused_past_the_request_timeout_loses_nothing(broker, seed_index_dir, tmp_path):
    """SIGSTOP: connections stay open and nothing answers, so the clients' requests time
    out (REQUEST_TIMEOUT_MS) rather than fail; SIGCONT after OUTAGE_S."""
    log = _survives(
        own_topics(broker.bootstrap_servers),
        seed_index_dir,
        tmp_path,
        "broker SIGSTOP/SIGCONT",
        lambda worker: broker.send_signal(signal.SIGSTOP),
        lambda: broker.send_signal(signal.SIGCONT),
    )
    assert "Request timed out" in log  # the pause outlasted the clients' request timeout


def _members(kafka: KafkaSettings) -> set[str]:
    """The member ids of the worker's consumer group."""
    admin = KafkaAdminClient(**connection_config(kafka), request_timeout_ms=10_000)
    try:
        group = admin.describe_groups([kafka.group_id])[kafka.group_id]
    finally:
        admin.close()
    return {m["member_id"] for m in group["members"]}


def test_the_network_cut_past_the_session_timeout_loses_nothing(seed_index_dir, tmp_path):
    """Every connection between the worker and the broker goes through a TCP proxy (the
    worker bootstraps through it, and the broker advertises it); the proxy drops them all
    and refuses new ones for OUTAGE_S, longer than the session timeout: the broker puts
    the silent worker out of its group, which it must join again."""
    proxy_port = free_port()
    broker = LocalBroker(advertised_port=proxy_port)
    with TcpProxy(broker.port, listen_port=proxy_port) as proxy, broker:
        kafka = own_topics(f"127.0.0.1:{proxy.port}")
        members: list[set[str]] = []

        def cut(worker: subprocess.Popen) -> None:
            members.append(_members(kafka))
            assert proxy.cut() > 0, "no connection went through the proxy"

        _survives(
            kafka,
            seed_index_dir,
            tmp_path,
            "network cut + restored",
            cut,
            proxy.restore,
            recovered=lambda: members.append(_members(kafka)),
        )
    # One member before and one after, not the same: the group expired the first and the
    # worker joined again (kafka-python gets a new member id).
    assert len(members[0]) == len(members[1]) == 1 and members[0] != members[1], members
