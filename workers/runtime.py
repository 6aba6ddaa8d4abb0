"""What every process that scores shares: the scoring worker, `fraud serve` and the
feedback processor all claim to be "the one scoring path", so the parts they have in
common are written once, here.

- load_runtime: load the detector and follow the reference bank it was built from.
- publish_decisions: decisions to the alert and scores topics, keyed by message id.
- on_bank_change: the metrics that follow the bank (reference counts, verdict latency).
- on_bad_record: the error policy, one function (as quix-streams' error callbacks): what
  a record that cannot be processed becomes (a dead letter, or a stop).
- on_publish_failed: what is logged when the broker did not acknowledge a batch's outputs.
- StageClock: seconds per stage of one batch (the fraud_stage_duration_seconds histogram).
"""

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from kafka import KafkaProducer

from fraud.config import KafkaSettings, Settings
from fraud.errors import PublishError, SchemaError
from fraud.metrics import WorkerMetrics, observe_bank_changes, set_index_gauges
from fraud.schemas import SCORING_ERROR, Decision
from fraud.scoring.detector import Detector
from fraud.scoring.isolation import ModelBrokenError, raised_at
from workers.kafka import send_dead_letter
from workers.state import BankFollower

log = logging.getLogger(__name__)
R = TypeVar("R")


# -- load the detector, follow the bank ----------------------------------------------------


@dataclass
class Runtime:
    """A loaded detector, and the follower that keeps its index in step with the bank
    topic (None when the index is not linked to the bank). close() closes the follower."""

    detector: Detector
    bank: BankFollower | None = None

    def close(self) -> None:
        if self.bank is not None:
            self.bank.close()


def load_runtime(settings: Settings, *, follow_unlinked: bool = False) -> Runtime:
    """The detector of `settings` and, when its index is linked to the bank topic (its
    manifest records changelog offsets: `fraud setup`, `fraud index publish` or
    `snapshot` wrote it), a follower that has applied every change since, before
    anything is scored. An index that is not linked is not followed, and that is logged;
    unless `follow_unlinked` (the feedback processor: it follows the bank to know the
    references it may disable, from the topic's start when the index records no offsets).
    """
    detector = Detector.from_settings(settings)
    kafka = settings.kafka
    if detector.index.changelog_offsets or follow_unlinked:
        return Runtime(detector, BankFollower.caught_up(kafka, detector.index))
    log.info(
        "index %s is not linked to the bank topic %s (no changelog offsets): not following "
        "it; link it with `fraud index publish` or `fraud index snapshot`",
        settings.index_dir,
        kafka.bank_topic,
    )
    return Runtime(detector)


def on_bank_change(metrics: WorkerMetrics, detector: Detector, changes: list) -> None:
    """Bank changes were applied to the detector's index: its reference gauges again, the
    changes counted, and how long each analyst verdict among them took to arrive."""
    set_index_gauges(metrics, detector)
    observe_bank_changes(metrics, changes, time.time())


# -- publish decisions ---------------------------------------------------------------------


class Sent(NamedTuple):
    """One record of a decision, sent: to which topic, and kafka-python's future for it."""

    decision: Decision
    topic: str
    future: Any  # kafka.producer.future.FutureRecordMetadata


def publish_decisions(
    producer: KafkaProducer,
    kafka: KafkaSettings,
    decisions: Iterable[Decision],
    *,
    scores: bool | None = None,
) -> list[Sent]:
    """Send each decision keyed by its message id (a decision made again, after a replay,
    lands under the same key with the same alert id): to the alert topic when it is an
    alert, and to the scores topic when `scores` (None: kafka.publish_scores, the worker's
    setting; `fraud serve --publish` always; the feedback processor's retroactive alerts
    never). Returns the sends, to wait on (await_sends) or to watch (callbacks).
    Raises what producer.send raises (no metadata within max_block_ms)."""
    to_scores = kafka.publish_scores if scores is None else scores
    sent = []
    for decision in decisions:
        payload, key = decision.to_bytes(), decision.message_id.encode("utf-8")
        topics = [kafka.alert_topic] if decision.is_alert else []
        if to_scores:
            topics.append(kafka.scores_topic)
        for topic in topics:
            sent.append(Sent(decision, topic, producer.send(topic, payload, key=key)))
    return sent


# -- the error policy ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A record that goes to the dead-letter topic instead of being processed: a fixed
    reason code (fraud/schemas.py DEAD_LETTER_REASONS), a detail, the error's class."""

    record: Any  # a ConsumerRecord: topic, partition, offset, key, value, timestamp
    reason: str
    detail: str
    error_class: str = "SchemaError"


def on_bad_record(error: BaseException, record, what: str = "the record") -> DeadLetter:
    """What a record that could not be processed becomes: the one error policy.

    - SchemaError (it cannot be decoded, or it is unusable, as a verdict without a text):
      a dead letter with the error's reason and detail.
    - Any other Exception of this one record alone (its encoding or scoring raised, and
      isolating it from its batch showed it fails alone: fraud/scoring/isolation.py): a
      dead letter, reason scoring_error, saying that `what` raised which class where;
      never the exception's text, which could quote the message.
    - ModelBrokenError, or what is no Exception (KeyboardInterrupt): raised again. A
      broken model fails every record, and dead-lettering them would empty the input.

    Each dead letter is logged as `topic[partition]@offset` when it is sent
    (publish_dead_letters).
    """
    if isinstance(error, ModelBrokenError) or not isinstance(error, Exception):
        raise error
    if isinstance(error, SchemaError):
        return DeadLetter(record, error.reason, error.detail)
    name = type(error).__name__
    detail = f"{what} raised {name} at {raised_at(error)}"
    return DeadLetter(record, SCORING_ERROR, detail, error_class=name)


def publish_dead_letters(
    producer: KafkaProducer, kafka: KafkaSettings, dead_letters: Iterable[DeadLetter]
) -> list:
    """Send each dead letter (send_dead_letter: the record's bytes and key, the reason in
    headers, logged with where it came from); returns the send futures."""
    return [
        send_dead_letter(
            producer,
            kafka.dead_letter_topic,
            d.record,
            d.reason,
            d.detail,
            error_class=d.error_class,
        )
        for d in dead_letters
    ]


def on_publish_failed(error: PublishError, records: Sequence) -> None:
    """The broker did not acknowledge the outputs of `records`: log which input records
    they came from (per partition, `topic[partition]@first..last`), which are not
    committed and will be read again. The caller raises `error` then."""
    log.error("%s: input %s not committed", error, records_at(records) or "(none)")


def records_at(records: Sequence) -> str:
    """Where records are, per partition: `topic[partition]@first..last`."""
    spans: dict[tuple[str, int], list[int]] = {}
    for r in records:
        span = spans.setdefault((r.topic, r.partition), [r.offset, r.offset])
        span[0], span[1] = min(span[0], r.offset), max(span[1], r.offset)
    return ", ".join(
        f"{topic}[{partition}]@{first}" + (f"..{last}" if last != first else "")
        for (topic, partition), (first, last) in sorted(spans.items())
    )


class StageClock:
    """Seconds per stage of one batch (the fraud_stage_duration_seconds histogram):
    lap(name) charges the time since the last lap to `name`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def skip(self) -> None:
        """The time since the last lap is no stage of this batch (waiting for the encoder
        thread), or was timed where it was spent (search and attention, inside scoring)."""
        self._last = time.perf_counter()

    def charge(self, timings: dict[str, float]) -> None:
        """Add stages timed elsewhere (the detector's search and attention)."""
        for name, seconds in timings.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name: str, fn: Callable[..., R], *args) -> R:
        """fn(*args), its seconds charged to `name`: for work on another thread (the
        encoder's), which this thread's laps do not see. Nothing is charged if it raises."""
        started = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return out
