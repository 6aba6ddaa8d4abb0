"""Sends the broker must acknowledge: waiting for them (await_sends, BrokerWait) and the
dead-letter record (send_dead_letter).

Every output that lets an input offset be committed goes through await_sends first: a
send the broker refused, or did not acknowledge in time, raises PublishError and nothing
is committed (the records are replayed). A dead letter keeps the record's bytes and key
and says where it came from in its headers, and is logged as `topic[partition]@offset`.
"""

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError

from fraud.errors import PublishError
from workers.kafka.clients import default_worker_id

log = logging.getLogger(__name__)

# How long the feedback processor and `fraud bank publish` wait for the broker's
# acknowledgements before they give up (the scoring worker waits on: BrokerWait).
FLUSH_TIMEOUT_S = 60.0


class BrokerWait:
    """A scoring worker's wait for a broker that does not answer, rather than stopping.

    A worker that quit during a broker outage needed a person to restart it. Now, when a
    batch's sends are not acknowledged within `timeout_s` (FRAUD_KAFKA__FLUSH_TIMEOUT_MS)
    and none was refused, the worker holds the batch (nothing committed) and waits on,
    checking every second whether it was asked to stop, until the broker answers; then it
    commits and resumes. A commit that finds the broker unreachable is kept and tried
    again (commit_offsets), and counts as the same wait once it has failed for
    `timeout_s`. While a wait lasts, `waiting` is true: /readyz answers 503 and
    fraud_broker_waiting is 1; fraud_broker_waits_total and
    fraud_broker_wait_seconds_total count the waits. Only unavailability waits: a send the
    broker refused (a record too large, a topic it will not write) fails its future, and
    that stops the worker as before.
    """

    POLL_S = 1.0  # how often a wait for sends checks for a stop request

    def __init__(
        self,
        timeout_s: float,
        metrics=None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.timeout_s, self.metrics, self.stopping = timeout_s, metrics, stopping
        self.since: float | None = None  # monotonic: the broker unanswering since then
        self.last_seen: float = float("-inf")  # monotonic: the last time it did not answer
        self.waiting = False  # reported: unanswering for timeout_s or longer

    def describe(self) -> str:
        if not self.waiting or self.since is None:
            return "ready"
        return f"waiting on the broker for {time.monotonic() - self.since:.0f} s"

    def unanswered(self, since: float, what: str) -> None:
        """The broker did not answer `what` (sends, a commit), tried since `since`
        (monotonic): the wait is reported once that has lasted timeout_s."""
        now = time.monotonic()
        self.last_seen = now
        if self.since is None:
            self.since = since
        if not self.waiting and now - self.since >= self.timeout_s:
            self.waiting = True
            log.warning(
                "the broker has not answered %s for %.0f s: waiting for it, holding the "
                "batch (nothing committed)",
                what,
                now - self.since,
            )
            if self.metrics is not None:
                self.metrics.broker_waiting.set(1)
                self.metrics.broker_waits.inc()

    def answered(self) -> None:
        """The broker answered (the sends acknowledged, a commit made): a wait ends."""
        if self.waiting and self.since is not None:
            seconds = time.monotonic() - self.since
            log.warning("the broker answered after %.1f s: resuming", seconds)
            if self.metrics is not None:
                self.metrics.broker_waiting.set(0)
                self.metrics.broker_wait_seconds.inc(seconds)
        self.since, self.waiting = None, False

    def wait_for_sends(
        self, producer: KafkaProducer, futures: list, started: float, what: str
    ) -> None:
        """Wait while some of `futures` are unanswered and none failed; the first flush
        (timeout_s from `started`) is over."""
        while any(not f.is_done for f in futures) and not any(f.failed() for f in futures):
            self.unanswered(started, f"{sum(not f.is_done for f in futures)} sends of {what}")
            if self.stopping():
                raise PublishError(
                    f"stopped while waiting on the broker: {what} not committed; its records "
                    "are replayed by the partitions' next owner"
                )
            _flush(producer, self.POLL_S)
        if not any(f.failed() for f in futures):
            self.answered()


def _flush(producer: KafkaProducer, timeout_s: float) -> None:
    """producer.flush(), whose errors say nothing about a send (each future does)."""
    try:
        producer.flush(timeout=timeout_s)
    except KafkaError as e:
        log.debug("producer flush: %r; waiting on each send", e)


def await_sends(
    producer: KafkaProducer,
    futures: Iterable,
    what: str,
    timeout_s: float = FLUSH_TIMEOUT_S,
    broker_wait: BrokerWait | None = None,
) -> None:
    """Wait until the broker acknowledged each of `futures` (sends of `producer`); raise
    PublishError naming `what` when any was refused, or was not acknowledged within
    `timeout_s` and there is no `broker_wait` to wait on (the scoring worker's: it waits
    for a broker that is away, BrokerWait).

    kafka-python 3.0.12's flush() gives up with UnknownError("Future not done") when a
    batch it waits on is split and sent again (the broker refused it as too large), and
    flush() never reports a refused send at all; each send's own future follows the
    split and tells how it ended.
    """
    futures = list(futures)
    started = time.monotonic()
    if broker_wait is not None:
        timeout_s = broker_wait.timeout_s
    _flush(producer, timeout_s)
    if broker_wait is not None:
        broker_wait.wait_for_sends(producer, futures, started, what)
    deadline = started + timeout_s
    failures = []
    for f in futures:
        try:
            f.get(timeout=max(deadline - time.monotonic(), 0.001))
        except KafkaError as e:  # refused, or no acknowledgement in time
            failures.append(e)
    if failures:
        raise PublishError(
            f"{len(failures)} records of {what} were not acknowledged by the broker "
            f"(first: {failures[0]!r}): not committing"
        )


def send_dead_letter(
    producer: KafkaProducer,
    topic: str,
    record,
    reason: str,
    detail: str,
    *,
    error_class: str = "SchemaError",
    worker_id: str | None = None,
):
    """The record's original bytes and key, with the reason and its provenance in headers;
    logged with where it came from.

    Headers: dead_letter_reason (a fixed code), dead_letter_detail (at most 1000 bytes),
    dead_letter_error (the exception class), dead_letter_worker (who refused it: the
    process's host:pid unless `worker_id` is given), dead_letter_time (UTC, ISO 8601),
    source_topic, source_partition, source_offset and source_timestamp (the record's
    own timestamp in ms, -1 if it has none).
    """
    log.warning(
        "dead letter %s[%d]@%d: %s: %s",
        record.topic,
        record.partition,
        record.offset,
        reason,
        detail,
    )
    # Cut to 1000 bytes without splitting a character, so the header stays valid UTF-8.
    detail_bytes = detail.encode("utf-8", "replace")[:1000].decode("utf-8", "ignore").encode()
    timestamp = getattr(record, "timestamp", None)
    timestamp = -1 if timestamp is None else timestamp
    headers = [
        ("dead_letter_reason", reason.encode()),
        ("dead_letter_detail", detail_bytes),
        ("dead_letter_error", error_class.encode()),
        ("dead_letter_worker", (worker_id or default_worker_id()).encode("utf-8", "replace")),
        ("dead_letter_time", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        ("source_timestamp", str(timestamp).encode()),
    ]
    return producer.send(topic, record.value or b"", key=record.key, headers=headers)
