"""The broker's faults, survived by a running `fraud worker` process on its own: the broker
stopped and started again, paused past the clients' request timeout, and cut off from the
worker by the network. Each test has a broker of its own (the session's is not stopped).

The oracle, as in test_faults.py: every input message has an id, and at the end every id
has a decision on the scores topic; the worker was never restarted. Half the messages
are sent before the fault, half after it. At-least-once allows
duplicates (a batch published but not committed when the fault struck): at most one batch.

Each prints one line for the README's table: the messages, when the fault struck, what was
missing, the duplicates, and the recovery time: from the fault's end (the broker answering
again, the link restored) to the first decision the worker sent after it (the record's
timestamp), and to the last message decided.
"""

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from fraud.config import KafkaSettings
from tests.workers.kafka_helpers import (
    Decisions,
    own_topics,
    produce_messages,
    worker_settings,
)
from tests.workers.tcp_proxy import TcpProxy
from workers.broker import LocalBroker, free_port
from workers.kafka_clients import ensure_topics
from workers.processes import start_worker, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

MESSAGES = 160
MAX_BATCH = 16
REQUEST_TIMEOUT_MS = 5_000
OUTAGE_S = 8.0  # how long a fault lasts: longer than the request timeout


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as broker:
        yield broker


def _survives(
    kafka: KafkaSettings,
    seed_index_dir,
    tmp_path,
    name: str,
    fault: Callable[[], float],
) -> str:
    """Start a worker on the first half of the messages, strike it with `fault` once a
    quarter of them are decided, send the second half once the fault is over, and check
    that it decides every message without being restarted.

    The second half makes the worker fetch from the broker again after the fault: the
    first half is all in its consumer's fetch buffer long before the fault strikes.
    `fault` returns once the fault is over, with the time.time() it ended. Returns the
    worker's log.
    """
    kafka = kafka.model_copy(
        update={
            "publish_scores": True,
            "max_batch": MAX_BATCH,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
        }
    )
    settings = worker_settings(kafka, seed_index_dir)
    ensure_topics(kafka, [kafka.input_topic, kafka.scores_topic])
    ids = produce_messages(kafka, MESSAGES // 2)
    decisions = Decisions(kafka)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_worker(settings, log)
        try:
            struck_at = len(decisions.read_until(lambda c: len(c) >= MESSAGES // 4, 180))
            assert struck_at >= MESSAGES // 4, log_path.read_text()[-3000:]
            assert struck_at < MESSAGES, "every message decided before the fault: no test"
            began = time.time()
            ended = fault()
            ids += produce_messages(kafka, MESSAGES - len(ids), first=len(ids))
            decisions.read_until(lambda c: set(ids) <= set(c), timeout_s=120)
            all_decided_s = time.time() - ended
            # Anything still arriving (a replayed batch's tail) is counted too.
            counts = decisions.read_until(lambda c: False, timeout_s=3)
            exited = worker.poll()
        finally:
            stop_process(worker)
            decisions.close()

    worker_log = log_path.read_text()
    assert exited is None, (
        f"the worker exited ({exited}) instead of recovering:\n" + (worker_log[-3000:])
    )
    missing = set(ids) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    first_s = decisions.first_written_after(ended)
    print(
        f"\nFAULT {name}: {MESSAGES} messages, struck after {struck_at} decisions, for "
        f"{ended - began:.1f} s; missing {len(missing)}, duplicates {duplicates}; after the "
        f"fault's end: first decision {first_s if first_s is None else round(first_s, 1)} s, "
        f"all decided {all_decided_s:.1f} s; the worker's own warnings: "
        f"{worker_log.count(' WARNING workers.')}"
    )
    assert not missing, f"{len(missing)} messages without a decision:\n{worker_log[-3000:]}"
    assert duplicates <= MAX_BATCH
    return worker_log


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_the_broker_stopped_and_started_again_loses_nothing(broker, seed_index_dir, tmp_path, how):
    """A controlled shutdown (SIGTERM) or a crash (SIGKILL); the broker comes back on the
    same port with the same data after OUTAGE_S."""

    def restart() -> float:
        if how == "sigterm":
            broker.stop(keep_data=True)
        else:
            broker.kill()
        time.sleep(OUTAGE_S)
        broker.start()
        return time.time()

    log = _survives(
        own_topics(broker.bootstrap_servers),
        seed_index_dir,
        tmp_path,
        f"broker {how} + restart",
        restart,
    )
    assert "ECONNREFUSED" in log  # the worker did try the broker while it was down


def test_the_broker_paused_past_the_request_timeout_loses_nothing(broker, seed_index_dir, tmp_path):
    """SIGSTOP: connections stay open and nothing answers, so the clients' requests time
    out (REQUEST_TIMEOUT_MS) rather than fail; SIGCONT after OUTAGE_S."""

    def pause() -> float:
        broker.send_signal(signal.SIGSTOP)
        time.sleep(OUTAGE_S)
        broker.send_signal(signal.SIGCONT)
        return time.time()

    log = _survives(
        own_topics(broker.bootstrap_servers),
        seed_index_dir,
        tmp_path,
        "broker SIGSTOP/SIGCONT",
        pause,
    )
    assert "Request timed out" in log  # the pause outlasted the clients' request timeout


def test_the_network_cut_and_restored_loses_nothing(seed_index_dir, tmp_path):
    """Every connection between the worker and the broker goes through a TCP proxy (the
    worker bootstraps through it, and the broker advertises it); the proxy drops them all
    and refuses new ones for OUTAGE_S."""
    proxy_port = free_port()
    broker = LocalBroker(advertised_port=proxy_port)
    with TcpProxy(broker.port, listen_port=proxy_port) as proxy, broker:

        def cut() -> float:
            assert proxy.cut() > 0, "no connection went through the proxy"
            time.sleep(OUTAGE_S)
            proxy.restore()
            return time.time()

        _survives(
            own_topics(f"127.0.0.1:{proxy.port}"),
            seed_index_dir,
            tmp_path,
            "network cut + restored",
            cut,
        )
