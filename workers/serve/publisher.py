"""`fraud serve --publish`: decisions to the workers' topics, never holding up scoring."""

import logging
import queue
import threading
import time

from fraud.config import KafkaSettings
from fraud.metrics import ServeMetrics
from fraud.schemas import Decision
from workers.runtime import publish_decisions

log = logging.getLogger(__name__)

# A send waits at most this long for the broker's metadata, on the publishing thread; an
# answer is never held for Kafka (a failed send is logged and counted).
PUBLISH_MAX_BLOCK_MS = 5000


class DecisionPublisher:
    """Sends decisions to the scores topic (and alerts to the alert topic) from a thread of
    its own, which owns the producer, so that scoring never waits for Kafka. The records
    are the worker's: publish_decisions, keyed by message id.

    offer() only queues a decision; at most `capacity` records are pending (queued here,
    or sent and not yet acknowledged or failed). A decision whose records do not fit is
    dropped: answered but not published, counted in fraud_serve_publish_dropped_total and
    logged (the first, then once a minute). This bounds memory while the broker is away
    too: kafka-python's producer has no buffer limit of its own."""

    def __init__(
        self, producer, kafka: KafkaSettings, capacity: int, metrics: ServeMetrics
    ) -> None:
        self.producer, self.kafka, self.capacity, self.metrics = producer, kafka, capacity, metrics
        self.errors = _Throttled("decisions not published: the broker did not acknowledge")
        self.drops = _Throttled(
            f"decisions not published: {capacity} records already waiting for the broker "
            "(FRAUD_SERVE__PUBLISH_QUEUE)"
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._deadline: float | None = None  # set by close(): send nothing after it
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def offer(self, alert: Decision) -> bool:
        """Queue `alert` for publishing (on the scoring thread); False if it was dropped."""
        records = _records(alert)
        with self._lock:
            if self._pending + records > self.capacity:
                dropped = True
            else:
                dropped = False
                self._pending += records
                self.metrics.publish_pending.set(self._pending)
        if dropped:
            self.metrics.publish_dropped.inc()
            self.drops.note(f"message {alert.message_id}")
            return False
        self._queue.put(alert)
        return True

    def _done(self, _result=None) -> None:
        with self._lock:
            self._pending -= 1
            self.metrics.publish_pending.set(self._pending)

    def _failed(self, error: BaseException) -> None:
        self.metrics.publish_errors.inc()
        self.errors.note(repr(error))
        self._done()

    def _run(self) -> None:
        """Send each queued decision's records; an alert is counted (under its category)
        once the alert topic acknowledged it."""
        alerts = self.metrics.scoring.alerts_published
        while (alert := self._queue.get()) is not None:
            if self._deadline is not None and time.monotonic() > self._deadline:
                for _ in range(_records(alert)):  # closing, and out of time
                    self.metrics.publish_dropped.inc()
                    self._done()
                continue
            try:
                sent = publish_decisions(self.producer, self.kafka, [alert], scores=True)
            except Exception as e:  # no metadata within max_block_ms, or closed
                for _ in range(_records(alert)):
                    self._failed(e)
                continue
            for s in sent:
                s.future.add_callback(self._done)
                s.future.add_errback(self._failed)
                if s.topic == self.kafka.alert_topic:
                    category = alert.category or "none"
                    s.future.add_callback(lambda _meta, c=category: alerts.labels(c).inc())

    def close(self, timeout_s: float = 30) -> None:
        """Send what is queued and wait for the acknowledgements, within timeout_s in all
        (what is left then is dropped and counted), then close the producer."""
        self._deadline = time.monotonic() + timeout_s
        self._queue.put(None)
        self._thread.join(timeout_s + PUBLISH_MAX_BLOCK_MS / 1000)
        self.producer.flush(timeout=max(self._deadline - time.monotonic(), 1))
        self.producer.close(timeout=10)


def _records(alert: Decision) -> int:
    """The records of a decision: the scores topic's, and the alert topic's for an alert."""
    return 2 if alert.is_alert else 1


class _Throttled:
    """Counts events and logs the first, then at most one line a minute with the count."""

    def __init__(self, what: str) -> None:
        self.what, self.logged_at, self.since = what, -float("inf"), 0

    def note(self, last: str) -> None:
        self.since += 1
        if time.monotonic() - self.logged_at >= 60:
            log.error("%d %s (last: %s)", self.since, self.what, last)
            self.logged_at, self.since = time.monotonic(), 0
