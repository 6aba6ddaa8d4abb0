"""The `fraud worker` process: load, serve metrics and health, score until SIGTERM/SIGINT.

One ExitStack owns every client and server the process opens (quix-streams' Application
does the same): whatever fails, at start or later, what was opened is closed, in the
reverse order.
"""

import logging
import threading
import time
from contextlib import ExitStack
from functools import partial

from prometheus_client import CollectorRegistry

from fraud.config import Settings
from fraud.metrics import build_metrics
from fraud.scoring.detector import Detector
from fraud.scoring.history import RecipientHistory
from workers.health import serve_metrics
from workers.kafka import (
    NEVER_EXPIRE_MS,
    ensure_history_topic,
    ensure_topics,
    make_consumer,
    make_producer,
    make_transactional_producer,
    partition_count,
)
from workers.processes import stop_on_signals
from workers.runtime import load_runtime
from workers.scoring.worker import ScoringWorker
from workers.state import HistoryState

log = logging.getLogger(__name__)


def run_worker(settings: Settings, ready: threading.Event | None = None) -> None:
    """The `fraud worker` process. SIGTERM or SIGINT stop it once the batches in hand are
    finished and committed; a second Ctrl-C interrupts at once. `ready` is set once it
    scores."""
    log.info("settings %s", settings.model_dump_json())
    kafka = settings.kafka
    with ExitStack() as stack:
        stack.callback(log.info, "worker stopped")  # last: after everything is closed
        runtime = load_runtime(settings)  # the bank caught up before anything is scored
        stack.callback(runtime.close)
        ensure_topics(
            kafka,
            [
                kafka.input_topic,
                kafka.alert_topic,
                kafka.dead_letter_topic,
                *([kafka.scores_topic] * kafka.publish_scores),
            ],
        )
        history = None
        if settings.history.enabled:
            ensure_history_topic(kafka, partition_count(kafka, kafka.input_topic))
            history = HistoryState(kafka, RecipientHistory(settings.history))
        registry = CollectorRegistry()
        worker = _open_worker(settings, runtime.detector, runtime.bank, history, registry, stack)
        server = serve_metrics(
            registry,
            settings.metrics_host,
            settings.metrics_port,
            healthy=partial(_alive, worker),
            readiness=partial(_readyz, worker, registry),
        )
        stack.callback(server.shutdown)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port)
        stop_on_signals(worker.stop)
        if ready is not None:
            ready.set()
        worker.run()


def _open_worker(settings, detector, bank, history, registry, stack: ExitStack) -> ScoringWorker:
    """The worker and its clients, each closed by `stack`."""
    kafka = settings.kafka
    # Sends never expire in the producer: a broker that is away is waited for (BrokerWait).
    options = {"delivery_timeout_ms": NEVER_EXPIRE_MS}
    new_producer = None
    if kafka.exactly_once:  # read only committed records; one transaction per batch
        consumer = make_consumer(kafka, isolation_level="read_committed")
        stack.callback(consumer.close, autocommit=False)
        new_producer = partial(make_transactional_producer, kafka, **options)
        producer = new_producer()
    else:
        consumer = make_consumer(kafka)
        stack.callback(consumer.close, autocommit=False)
        producer = make_producer(kafka, **options)
    timeout_s = kafka.flush_timeout_ms / 1000
    stack.callback(producer.close, timeout=timeout_s)
    worker = ScoringWorker(
        detector, kafka, consumer, producer, build_metrics(registry), bank, history, new_producer
    )

    def close_renewed() -> None:
        # Exactly-once: the producer renewed after a lost transaction (None while the
        # renewal waits for the broker).
        renewed = worker.producer
        if renewed is not None and renewed is not producer:
            renewed.close(timeout=timeout_s)

    stack.callback(close_renewed)
    return worker


# Alive (/healthz, for a liveness probe) while the loop turns, a batch or an empty poll at
# least every poll interval, or while it waits on the broker: restarting a worker whose
# broker is away helps nothing, and would replay its batch. Ready (/readyz) when alive and
# not waiting on the broker: the wait is reported there and as a metric.


def _alive(worker: ScoringWorker) -> bool:
    limit_s = worker.kafka.max_poll_interval_ms / 1000
    return time.monotonic() - worker.last_batch_at < limit_s or worker.broker_wait.waiting


def _readyz(worker: ScoringWorker, registry: CollectorRegistry) -> dict:
    if worker.broker_wait.waiting:
        return readiness(worker.detector, False, worker.broker_wait.describe())
    if not _alive(worker):
        return readiness(worker.detector, False, "the scoring loop is stuck")
    return readiness(worker.detector, registry.get_sample_value("fraud_worker_up") == 1)


def readiness(detector: Detector, running: bool, status: str | None = None) -> dict:
    """The worker's /readyz: ready while the scoring loop runs (`status` says why not:
    waiting on the broker, stuck); which scorer it uses and why (a trained head that no
    longer matches the index is not used: fraud/scoring/detector.py)."""
    return {
        "ready": running,
        "status": status or ("ready" if running else "not running"),
        "scorer": detector.choice.scorer,
        "scorer_reason": detector.choice.reason,
        "detail": detector.choice.detail,
        "index_version": detector.index.version,
        # The next bank offset to apply, per partition: a bank change at offset o of
        # partition p is applied once this exceeds o (the console's alert page shows it).
        "bank_offsets": {str(p): o for p, o in dict(detector.index.changelog_offsets).items()},
        "references": len(detector.index),
        "threshold": detector.params.threshold,
    }
