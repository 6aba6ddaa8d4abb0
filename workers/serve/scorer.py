"""What `fraud serve`'s scoring thread owns and does: the detector and the bank follower
(load_runtime, as the worker loads them), the watch on the follower, the publisher; and
each batch's decisions, a message that fails isolated from its batchmates."""

import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime

from fraud.config import Settings
from fraud.errors import ScoringError
from fraud.metrics import ServeMetrics, WorkerMetrics, set_index_gauges
from fraud.schemas import Decision, Message
from fraud.scoring.detector import Detector
from fraud.scoring.isolation import Failure, isolate, raised_at
from workers.kafka import ensure_topics, make_producer
from workers.runtime import StageClock, load_runtime, on_bank_change
from workers.serve.publisher import PUBLISH_MAX_BLOCK_MS, DecisionPublisher
from workers.state import BankFollower, BankWatch, FollowState

log = logging.getLogger(__name__)


def scoring_failed(message_id: str, error: BaseException) -> ScoringError:
    """The ScoringError of a message whose scoring raised `error`, under a new error id,
    which the log line about it carries (with the message id and the error's class and
    where it was raised, never its text: it could quote the message)."""
    error_id = uuid.uuid4().hex[:16]
    log.error(
        "message %s could not be scored (%s at %s): error id %s",
        message_id,
        type(error).__name__,
        raised_at(error),
        error_id,
    )
    return ScoringError(message_id, error_id)


class InlineScorer:
    """What the scoring thread owns: the detector, the bank follower (and the watch on it)
    and, with --publish, the publisher. Every method runs on that one thread."""

    def __init__(
        self,
        detector: Detector,
        metrics: WorkerMetrics,
        bank: BankFollower | None = None,
        publisher: DecisionPublisher | None = None,
        watch: BankWatch | None = None,
    ) -> None:
        self.detector, self.metrics, self.bank = detector, metrics, bank
        self.publisher, self.watch = publisher, watch
        set_index_gauges(metrics, detector)

    def score(
        self, messages: Sequence[Message], arrived: Sequence[float]
    ) -> list[Decision | ScoringError]:
        """Decisions for a batch, in order; a ScoringError (logged with an error id) for a
        message that could not be scored. A batch that fails is split until the messages
        that fail alone are found (fraud/scoring/isolation.py), so one bad message does
        not fail its batchmates. `arrived`: each message's time.monotonic()."""
        self.poll_bank()
        try:
            return list(self._score(messages, arrived))
        except Exception as e:  # logged without its message: it could quote the text
            log.error(
                "scoring a batch of %d failed (%s at %s): splitting it to find the messages "
                "that fail",
                len(messages),
                type(e).__name__,
                raised_at(e),
            )
            self.metrics.batch_failures.labels("isolated").inc()
            items = list(zip(messages, arrived, strict=True))
            outcomes = isolate(
                items, lambda group: self._score([m for m, _ in group], [a for _, a in group]), e
            )
        return [
            scoring_failed(message.id, o.error) if isinstance(o, Failure) else o
            for (message, _), o in zip(items, outcomes, strict=True)
        ]

    def _score(self, messages: Sequence[Message], arrived: Sequence[float]) -> list[Decision]:
        clock = StageClock()
        texts = [message.text for message in messages]
        queries = self.detector.encode(texts)
        clock.lap("encode")
        result = self.detector.score(queries, texts)
        clock.charge(result.timings)
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        now = time.monotonic()
        alerts = [
            self.detector.decide(
                message, assessment, scored_at=scored_at, processing_ms=(now - at) * 1e3
            )
            for message, assessment, at in zip(messages, result.assessments, arrived, strict=True)
        ]
        clock.skip()  # search and attention were timed inside; the decisions are no stage
        if self.publisher is not None:
            for alert in alerts:
                self.publisher.offer(alert)
            clock.lap("publish")
        self._observe(alerts, arrived, clock, now)
        return alerts

    def _observe(self, alerts: list[Decision], arrived, clock: StageClock, now: float) -> None:
        m = self.metrics
        m.messages_scored.inc(len(alerts))
        m.batch_size.observe(len(alerts))
        for name, seconds in clock.seconds.items():
            m.stage_duration.labels(name).observe(seconds)
        for alert, at in zip(alerts, arrived, strict=True):
            m.scores.observe(alert.score)
            m.processing_latency.observe(now - at)
            if alert.is_alert and self.publisher is None:  # else counted once acknowledged
                m.alerts_published.labels(alert.category or "none").inc()

    def poll_bank(self) -> None:
        """Apply the bank changes that arrived (the worker does the same between batches).
        A failure is the watch's to report (readyz, metric, log): scoring goes on with
        the bank as it is."""
        if self.bank is None:
            return
        try:
            applied = self.bank.poll()
        except Exception as e:
            if self.watch is not None:
                self.watch.poll_failed(e)
            return
        if self.watch is not None:
            self.watch.poll_failed(None)
        if applied:
            on_bank_change(self.metrics, self.detector, self.bank.last_applied)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.watch is not None:
            self.watch.close()
        if self.bank is not None:
            self.bank.close()


def load_scorer(settings: Settings, metrics: ServeMetrics) -> InlineScorer:
    """The detector of `settings`, following the bank topic when its index is linked to
    it (load_runtime, as the worker), watched from a thread of its own, and a publisher
    for --publish. Runs on the scoring thread. What it opened is closed if it fails."""
    kafka = settings.kafka
    with ExitStack() as stack:
        runtime = load_runtime(settings)  # every change since the snapshot, before answering
        stack.callback(runtime.close)
        watch = publisher = None
        if runtime.bank is not None:
            index, partitions = runtime.detector.index, runtime.bank.partitions
            watch = BankWatch(kafka, index, partitions, on_check=_BankMetrics(metrics))
            stack.callback(watch.close)
            watch.start()
        if settings.serve.publish:
            ensure_topics(kafka, [kafka.alert_topic, kafka.scores_topic])
            producer = make_producer(kafka, max_block_ms=PUBLISH_MAX_BLOCK_MS)
            stack.callback(producer.close, timeout=10)
            publisher = DecisionPublisher(producer, kafka, settings.serve.publish_queue, metrics)
        stack.pop_all()  # the scorer closes them now
    return InlineScorer(runtime.detector, metrics.scoring, runtime.bank, publisher, watch)


class _BankMetrics:
    """The bank watch's checks as metrics: following (1/0), and the failed checks."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics
        metrics.bank_following.set(1)  # caught up at load

    def __call__(self, state: FollowState) -> None:
        self.metrics.bank_following.set(int(state.following))
        if not state.following:
            self.metrics.bank_follow_failures.inc()
