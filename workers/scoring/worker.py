"""The scoring worker: consume -> score -> publish -> commit, in micro-batches.

Delivery is at-least-once. Input offsets are committed only after the broker has
acknowledged every alert, score record and dead letter produced from them; a crash
before the commit replays the batch, and a replayed alert carries the same key and
alert id as the first. A bad record never stops the worker: it goes to the
dead-letter topic with its original bytes and the reason in a header. That holds for a
record that decodes but whose encoding or scoring raises, too: the batch is split until
that message is found (fraud/scoring/isolation.py), it is dead-lettered (reason scoring_error),
and the rest is scored and committed. A model that fails a known-good probe as well is
broken: the worker stops then, without committing, rather than dead-letter everything.

Pipelining: the encoder runs on its own thread. While it embeds batch N, the worker polls
and decodes batch N+1; then it scores, publishes and commits N (in input order, on the
worker's thread) while the encoder moves on to N+1. The worker keeps polling until N is
encoded, with its partitions paused once N+1 is full, so an encoding that outlasts
max_poll_interval_ms does not put the worker out of the group.

Rebalances: a rebalance can happen while a batch is in hand (a worker joins or leaves).
The records of partitions that moved are dropped from the batches in hand and are their
new owner's to replay from the committed offset; the records of partitions kept are
finished. A commit refused because the group is rebalancing is logged and kept: for the
partitions this worker still owns it goes again with the next commit, on an idle loop,
or before the worker leaves (the consumer does not hand those records out again); for
the partitions that moved, the new owner replays the records: duplicates with the same
keys and alert ids, nothing lost.

Recipient history (fraud/scoring/history.py): with a HistoryState, messages that carry a
`recipient` are scored with that recipient's earlier suspicious messages as extra keys;
the changed histories go to the history topic with the batch's decisions, before the
commit, and a rebalance restores the history of the partitions a worker is given.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from prometheus_client import CollectorRegistry

from fraud.config import KafkaSettings, Settings
from fraud.errors import SchemaError
from fraud.metrics import WorkerMetrics, build_metrics, observe_bank_changes, set_index_gauges
from fraud.schemas import SCORING_ERROR, Alert, Message, parse_message
from fraud.scoring.detector import Detector
from fraud.scoring.history import Arrival, HistoryScorer
from fraud.scoring.isolation import Failure, ModelBrokenError, check_model, isolate, raised_at
from workers.kafka import compat as kafka_compat
from workers.kafka.clients import (
    BrokerWait,
    PublishError,
    await_sends,
    commit_offsets,
    offsets_after,
    send_dead_letter,
    subscribe_when_known,
)
from workers.state.bank import BankFollower
from workers.state.history import HistoryState, PartitionListener

log = logging.getLogger(__name__)

# While a batch is being encoded, how often (ms) the next batch's poll looks whether the
# encoding is done.
ENCODED_CHECK_MS = 5
# Exactly-once: lost transactions scored again in a row before the worker gives up (a
# broker that aborts every one is not an outage that ends).
MAX_REDOS = 10


@dataclass
class BatchResult:
    consumed: int = 0
    scored: int = 0
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: int = 0


class ScoringWorker:
    def __init__(
        self,
        detector: Detector,
        kafka: KafkaSettings,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        metrics: WorkerMetrics,
        bank: BankFollower | None = None,
        history: HistoryState | None = None,
        new_producer: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        self.detector, self.kafka, self.bank, self.history = detector, kafka, bank, history
        self.consumer, self.producer, self.metrics = consumer, producer, metrics
        self.partitions = PartitionListener(history, kafka.input_topic)
        self.stop_event = threading.Event()
        self.last_batch_at = time.monotonic()
        self._lag_partitions: set = set()
        self._next_offset: dict[int, int] = {}  # per partition: the offset after the last taken
        self._redone = 0  # exactly-once: transactions lost in a row (TransactionLost)
        self._encoder_thread = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self.broker_wait = BrokerWait(
            kafka.flush_timeout_ms / 1000, metrics, stopping=self.stop_event.is_set
        )
        self.outputs = Outputs(
            producer,
            consumer,
            kafka.exactly_once,
            self.broker_wait,
            new_producer,
            # Beyond this the broker has aborted the transaction: no use waiting on it.
            transaction_timeout_s=kafka.transaction_timeout_ms / 1000
            + kafka.flush_timeout_ms / 1000,
        )
        set_index_gauges(self.metrics, self.detector)

    def _set_lag(self) -> None:
        """End offset minus position, per assigned partition (from the last fetch's high
        watermark: no request to the broker)."""
        assigned = self.consumer.assignment()
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                lag = max(highwater - self.consumer.position(tp), 0)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        for tp in self._lag_partitions - assigned:  # moved to another worker
            self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self._lag_partitions = set(assigned)

    def run(self) -> None:
        """Score until stop() is called; the batches in hand are finished and committed first.

        Two batches are in hand at a time: while the encoder thread embeds one, this
        thread polls and decodes the next, then scores, publishes and commits the first.
        Encoding is nearly all the work, so the encoder is kept busy; scoring, the history
        and commits stay in input order on this thread.
        """
        subscribe_when_known(self.consumer, [self.kafka.input_topic], listener=self.partitions)
        log.info(
            "scoring %s -> alerts %s (index %s, %d references, threshold %.2f)",
            self.kafka.input_topic,
            self.kafka.alert_topic,
            self.detector.index.version,
            len(self.detector.index),
            self.detector.params.threshold,
        )
        self.metrics.worker_up.set(1)
        in_flight: Batch | None = None
        try:
            while not self.stop_event.is_set():
                records = self.poll_batch(in_flight)
                self.last_batch_at = time.monotonic()
                # Bank changes first, so each batch is scored with every change seen so far.
                if self.bank is not None and self.bank.poll():
                    self._bank_changed()
                batch = self.start(records) if records else None
                if in_flight is not None:
                    batch = self._finish_or_redo(in_flight, batch)
                elif batch is None and self.outputs.unsaved:
                    self.outputs.commit([])  # idle: retry a commit a rebalance refused
                in_flight = batch
                self._set_lag()
            if in_flight is not None:
                self._wait_polling(in_flight, [])
                self._finish_or_redo(in_flight, None)
            self._commit_unsaved_before_leaving()
        finally:
            self.metrics.worker_up.set(0)
            self._encoder_thread.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self.stop_event.set()

    def _finish_or_redo(self, in_flight: "Batch", following: "Batch | None") -> "Batch | None":
        """finish(in_flight) and return `following`, the batch to keep in flight; when the
        broker aborted in_flight's transaction during an outage (TransactionLost), both
        are dropped and read again (redo): None."""
        try:
            self.finish(in_flight)
            self._redone = 0
            return following
        except TransactionLost as e:
            self._redone += 1
            if self._redone > MAX_REDOS:
                raise PublishError(f"{MAX_REDOS} transactions lost in a row: stopping") from e
            log.warning("%s", e)
            self.redo(following)
            return None

    def redo(self, following: "Batch | None") -> None:
        """Read every partition of this worker's again from its committed offset, as a new
        owner would after a rebalance: a new producer, the batch in the encoder dropped,
        the recipients' histories restored from the history topic."""
        if following is not None and following.encoded is not None:
            wait([following.encoded])  # the encoder thread's work on it is not used
        self.outputs.renew()
        self.producer = self.outputs.producer
        owned = sorted(self.consumer.assignment())
        for tp in owned:
            offset = self.consumer.committed(tp)
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        self._next_offset = {}
        if self.history is not None:
            partitions = [tp.partition for tp in owned]
            self.history.forget(partitions)
            self.history.restore(partitions)

    def _commit_unsaved_before_leaving(self) -> None:
        """A commit a rebalance refused gets one more try before the worker leaves the
        group: a poll finishes the rebalance (GroupConsumer), and the offsets of the
        partitions still this worker's are committed. Records that poll fetches are not
        used and not committed: their partitions' next owner reads them."""
        if not self.outputs.unsaved:
            return
        self.consumer.poll(timeout_ms=self.kafka.batch_timeout_ms, max_records=1)
        self.outputs.commit([])
        if self.outputs.unsaved:
            log.warning(
                "offsets of %d partitions left uncommitted at shutdown: their next owner "
                "replays those records",
                len(self.outputs.unsaved),
            )

    def poll_batch(self, in_flight: "Batch | None" = None) -> list[ConsumerRecord]:
        """Up to max_batch records, waiting at most batch_timeout_ms for the batch to fill.

        The batch also ends as soon as the one in flight is encoded: that one is then
        finished at once rather than after the whole wait, and this one goes to the encoder
        (under load, a batch lasts as long as an encoding; idle, the timeout).

        It does not end before the one in flight is encoded, though (_wait_polling).
        """
        batch: list[ConsumerRecord] = []
        deadline = time.monotonic() + self.kafka.batch_timeout_ms / 1000
        encoding = in_flight.encoded if in_flight is not None else None
        while len(batch) < self.kafka.max_batch and not self.stop_event.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if encoding is not None:
                if encoding.done():
                    break
                remaining_ms = min(remaining_ms, ENCODED_CHECK_MS)
            if remaining_ms <= 0:
                break
            self._poll_into(batch, in_flight, remaining_ms)
        if in_flight is not None:
            self._wait_polling(in_flight, batch)
        return batch

    def _wait_polling(self, in_flight: "Batch", batch: list[ConsumerRecord]) -> None:
        """Wait until the batch in flight is encoded, polling with the partitions paused
        if that takes long.

        An encoding can take longer than max_poll_interval_ms (a slow machine, a large
        batch). A worker that stopped polling meanwhile would be put out of the group by
        kafka-python's heartbeat thread at every such batch, its partitions moved away and
        back, its commits refused. So every third of that interval it polls, with the
        partitions paused: they fetch nothing, so the batch does not grow, and a
        rebalance is still handled (_poll_into). The usual encoding ends long before the
        first of those polls, and the wait costs no CPU: polling all along (every few ms,
        pausing and resuming) took a fifth of the worker's throughput (`fraud bench`).
        """
        encoded = in_flight.encoded
        if encoded is None:
            return
        budget_s = self.kafka.max_poll_interval_ms / 3000
        paused = False
        try:
            while not wait([encoded], timeout=budget_s).done:
                if not paused:
                    self.consumer.pause(*self.consumer.assignment())
                    paused = True
                self._poll_into(batch, in_flight, ENCODED_CHECK_MS)
        finally:
            if paused:
                self.consumer.resume(*self.consumer.paused())

    def _poll_into(
        self, batch: list[ConsumerRecord], in_flight: "Batch | None", timeout_ms: int
    ) -> None:
        """One poll; its new records are appended to `batch`.

        A rebalance during the poll: records of partitions that moved, in `batch` and in
        the one being encoded, are their new owner's to read again from the committed
        offset; those of partitions kept stay. The consumer may fetch a kept partition
        again from its committed offset: records already taken are skipped.
        """
        polled = self.consumer.poll(
            timeout_ms=timeout_ms, max_records=max(self.kafka.max_batch - len(batch), 1)
        )
        # A new assignment's history, before any record is used.
        moved = self.partitions.apply()
        owned = self.partitions.owned
        if moved:
            batch[:] = [r for r in batch if r.partition in owned]
            if in_flight is not None:
                in_flight.keep(owned)
            self._next_offset = {p: o for p, o in self._next_offset.items() if p in owned}
        for records in polled.values():
            for r in records:
                if r.partition not in owned:
                    continue  # fetched before a rebalance that took it away
                if r.offset >= self._next_offset.get(r.partition, -1):
                    batch.append(r)
                    self._next_offset[r.partition] = r.offset + 1

    def start(self, records: list[ConsumerRecord]) -> "Batch":
        """Decode a batch, dead-letter what is malformed, and hand the texts to the
        encoder thread."""
        batch = Batch(records=records, started=time.monotonic())
        self.metrics.messages_consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        for record in records:
            try:
                message = parse_message(record.value, self.kafka.max_message_bytes)
                batch.good.append((record, message))
            except SchemaError as e:
                batch.dead.append((record, e))
        batch.stage.lap("decode")
        if batch.good:
            texts = [m.text for _, m in batch.good]
            batch.encoded = self._encoder_thread.submit(_timed, self.detector.encode, texts)
        return batch

    def finish(self, batch: "Batch") -> BatchResult:
        """Score a batch in input order, publish its decisions, wait for the acks, and
        commit its offsets. A message whose encoding or scoring raised goes to the
        dead-letter topic instead (_decide)."""
        stage = batch.stage
        result = BatchResult(consumed=len(batch.records))
        decided, failed = self._decide(batch)
        stage.lap(None)  # encode, search and attention were timed inside
        self.outputs.begin()
        futures = [
            send_dead_letter(
                self.producer, self.kafka.dead_letter_topic, record, e.reason, e.detail
            )
            for record, e in batch.dead
        ]
        futures += [self._dead_letter(f) for f in failed]
        if self.history is not None:
            futures += self.history.publish_changes(self.producer)
        for d in decided:
            key = d.message.id.encode("utf-8")
            if d.alert.is_alert:
                futures.append(self.producer.send(self.kafka.alert_topic, d.payload, key=key))
                result.alerts.append(d.alert)
            if self.kafka.publish_scores:
                futures.append(self.producer.send(self.kafka.scores_topic, d.payload, key=key))

        self.outputs.flush(futures)
        stage.lap("publish")
        acked = time.time()
        self.outputs.commit(batch.records)
        stage.lap("commit")
        for name, seconds in stage.seconds.items():
            self.metrics.stage_duration.labels(name).observe(seconds)
        for d in decided:
            self.metrics.scores.observe(d.alert.score)
            if d.record.timestamp and d.record.timestamp > 0:
                self.metrics.end_to_end_latency.observe(max(acked - d.record.timestamp / 1000, 0))

        result.scored, result.dead_letters = len(decided), len(batch.dead) + len(failed)
        self.metrics.messages_scored.inc(len(decided))
        for alert in result.alerts:
            self.metrics.alerts_published.labels(alert.category or "none").inc()
        for _, e in batch.dead:
            self.metrics.dead_letters.labels(e.reason).inc()
        self.metrics.dead_letters.labels(SCORING_ERROR).inc(len(failed))
        latency = time.monotonic() - batch.started
        for _ in batch.records:
            self.metrics.processing_latency.observe(latency)
        self._set_history_gauges()
        return result

    # -- encoding and scoring, one failing message isolated --------------------------------

    def _decide(self, batch: "Batch") -> tuple[list["Decided"], list["Failed"]]:
        """The decision on each decoded message of `batch`, in input order, and the
        messages whose encoding or scoring raised.

        The fast path is one encoding (on the encoder thread, started by start()) and
        one scoring call for the whole batch. When either raises, a known-good probe
        tells a broken model (ModelBrokenError: the worker stops, nothing committed)
        from a message that breaks it; then the batch is split until the failing
        messages are found (fraud/scoring/isolation.py) and the rest is scored.
        """
        good = batch.good
        if not good:
            return [], []
        queries, encoded, failed = self._encodings(batch)
        arrivals = [_arrival(record, message) for record, message in good]

        def attempt(rows: Sequence[int]) -> list[Decided]:
            try:
                return self._score_rows(batch, queries, encoded, arrivals, rows)
            except Exception:
                self._forget(arrivals[encoded[r]] for r in rows)
                raise

        rows = list(range(len(encoded)))
        outcomes: list[Decided | Failure] = []
        if rows:
            try:
                outcomes = list(attempt(rows))
            except Exception as e:
                self._batch_failed("scoring", e, len(rows))
                outcomes = isolate(rows, attempt, e)
        decided = []
        for row, outcome in zip(rows, outcomes, strict=True):
            i = encoded[row]
            if isinstance(outcome, Failure):
                failed.append(Failed(*good[i], "scoring", outcome))
            else:
                decided.append(outcome)
        failed.sort(key=lambda f: (f.record.partition, f.record.offset))
        if self.history is not None:
            self.history.seen([_arrival(d.record, d.message) for d in decided])
        return decided, failed

    def _encodings(self, batch: "Batch") -> tuple[np.ndarray, list[int], list["Failed"]]:
        """The batch's query embeddings: (queries, which message of batch.good each row
        is, the messages that could not be encoded)."""
        good = batch.good
        try:
            queries, batch.stage.seconds["encode"] = batch.encoded.result()
        except Exception as e:
            batch.stage.lap(None)  # waiting for the encoder thread is not a stage of this batch
            self._batch_failed("encoding", e, len(good))
            texts = [m.text for _, m in good]
            outcomes = isolate(range(len(good)), lambda rows: self._encode(texts, rows), e)
            batch.stage.lap("encode")
            encoded, vectors, failed = [], [], []
            for i, outcome in enumerate(outcomes):
                if isinstance(outcome, Failure):
                    failed.append(Failed(*good[i], "encoding", outcome))
                else:
                    encoded.append(i)
                    vectors.append(outcome)
            queries = np.array(vectors, np.float32).reshape(len(vectors), self.detector.encoder.dim)
            return queries, encoded, failed
        batch.stage.lap(None)  # waiting for the encoder thread is not a stage of this batch
        if batch.rows is not None:  # a rebalance took some of its partitions
            queries = queries[batch.rows]
        return queries, list(range(len(good))), []

    def _encode(self, texts: list[str], rows: Sequence[int]) -> np.ndarray:
        """Embed texts[rows] on the encoder thread (the model is used from one thread)."""
        chosen = [texts[i] for i in rows]
        return self._encoder_thread.submit(self.detector.encode, chosen).result()

    def _score_rows(
        self,
        batch: "Batch",
        queries: np.ndarray,
        encoded: list[int],
        arrivals: list[Arrival],
        rows: Sequence[int],
    ) -> list["Decided"]:
        """Score queries[rows] in input order, with the recipients' history, and build
        their decisions (the messages are batch.good[encoded[row]])."""
        picked = [batch.good[encoded[r]] for r in rows]
        history = None if self.history is None else self.history.history
        result = HistoryScorer(self.detector, history).score(
            [arrivals[encoded[r]] for r in rows],
            queries[list(rows)],
            [m.text for _, m in picked],
        )
        for stage, seconds in result.timings.items():
            batch.stage.seconds[stage] = batch.stage.seconds.get(stage, 0.0) + seconds
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        elapsed_ms = (time.monotonic() - batch.started) * 1000
        decided = []
        for (record, message), assessment in zip(picked, result.assessments, strict=True):
            alert = self.detector.decide(
                message, assessment, scored_at=scored_at, processing_ms=elapsed_ms
            )
            decided.append(Decided(record, message, alert, alert.to_bytes()))
        return decided

    def _forget(self, arrivals: Iterable[Arrival]) -> None:
        """A group whose scoring raised leaves no history behind: its messages are scored
        again in smaller groups, in input order, and those that fail alone never count."""
        if self.history is not None:
            for arrival in arrivals:
                self.history.history.forget(arrival)

    def _batch_failed(self, what: str, error: Exception, size: int) -> None:
        """A batch's encoding or scoring raised: stop if the model fails a known-good
        probe too (ModelBrokenError), else go on to isolate the failing messages."""
        log.error(
            "%s a batch of %d messages failed (%s at %s): probing the model, then splitting "
            "the batch to find the messages that fail",
            what,
            size,
            type(error).__name__,
            raised_at(error),
        )
        try:
            check_model(self._score_probe, error, f"{what} a batch")
        except ModelBrokenError:
            self.metrics.batch_failures.labels("fatal").inc()
            raise
        self.metrics.batch_failures.labels("isolated").inc()

    def _score_probe(self, texts: list[str]) -> None:
        self.detector.score(self._encode(texts, range(len(texts))), texts)

    def _dead_letter(self, failed: "Failed"):
        """A message whose encoding or scoring raised, to the dead-letter topic: the
        exception class in a header, where it was raised in the detail, never the
        exception's text (it could quote the message)."""
        failure = failed.failure
        return send_dead_letter(
            self.producer,
            self.kafka.dead_letter_topic,
            failed.record,
            SCORING_ERROR,
            f"{failed.stage} message {failed.message.id} raised {failure.error_class} "
            f"at {failure.where}",
            error_class=failure.error_class,
        )

    def _bank_changed(self) -> None:
        set_index_gauges(self.metrics, self.detector)
        observe_bank_changes(self.metrics, self.bank.last_applied, time.time())
        if self.history is None:
            return
        # Frauds an analyst confirmed become history keys of their recipient too (if this
        # worker scored them recently), written to the history topic at once.
        admitted = self.history.admit_confirmed(self.bank.last_applied)
        if admitted:
            self.outputs.begin()
            self.outputs.flush(self.history.publish_changes(self.producer))
            self.outputs.commit([])
            log.info("confirmed frauds added to their recipients' history: %s", admitted)

    def _set_history_gauges(self) -> None:
        if self.history is not None:
            h = self.history.history
            self.metrics.history_recipients.set(len(h))
            self.metrics.history_entries.set(h.entry_count())
            self.metrics.history_memory.set(h.memory_bytes())


class Outputs:
    """How a batch's outputs and its input offsets become durable together.

    At-least-once (the default): wait for the broker to acknowledge every output, then
    commit the input offsets. flush() returns even when sends failed, so each send is
    checked on its own; a failure stops the worker before the commit, and a crash between
    the acks and the commit replays the batch (duplicates with the same keys). A broker
    that does not answer is waited for (BrokerWait): the batch is held, not given up.

    Exactly-once (FRAUD_KAFKA__EXACTLY_ONCE): one Kafka transaction per batch holds its
    outputs and its input offsets (send_offsets_to_transaction). A subscriber reading with
    isolation_level=read_committed sees each decision once; a worker that dies mid-batch
    leaves an open transaction that the broker aborts (transaction_timeout_ms), and the
    batch's next owner writes it again.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        consumer: KafkaConsumer,
        exactly_once: bool,
        broker_wait: BrokerWait | None = None,
        new_producer: Callable[[], KafkaProducer] | None = None,
        transaction_timeout_s: float = 60.0,
    ):
        self.producer, self.consumer, self.exactly_once = producer, consumer, exactly_once
        self.broker_wait, self.new_producer = broker_wait, new_producer
        self.transaction_timeout_s = transaction_timeout_s
        self.unsaved: dict = {}  # at-least-once: offsets whose commit a rebalance refused
        self._began = time.monotonic()
        if exactly_once:
            producer.init_transactions()

    def begin(self) -> None:
        self._began = time.monotonic()
        if self.exactly_once:
            self.producer.begin_transaction()

    def renew(self) -> None:
        """Exactly-once, after TransactionLost: a new producer with the same transactional
        id (the broker fenced the old one when it aborted its transaction, or fences it
        now). Its initialization waits for the broker, however long it is away."""
        assert self.new_producer is not None  # noqa: S101 (TransactionLost needs it)
        self.producer.close(timeout=0)
        self.producer = self.new_producer()
        started = time.monotonic()
        while True:
            try:
                self.producer.init_transactions()
                break
            except KafkaTimeoutError:
                if self.broker_wait is None or self.broker_wait.stopping():
                    raise
                self.broker_wait.unanswered(started, "a new transactional producer")

    def flush(self, futures: Iterable) -> None:
        """Wait for the batch's sends: each must be acknowledged, and a broker that does not
        answer is waited for. Exactly-once too: commit_transaction would flush them, but
        while the broker is away it would block without a word."""
        try:
            await_sends(self.producer, futures, "the batch", broker_wait=self.broker_wait)
        except PublishError as e:
            if self.exactly_once:
                self._abort(e, time.monotonic())
            raise

    def commit(self, records: list[ConsumerRecord]) -> None:
        """Make the batch's input offsets (and, exactly-once, its outputs) durable."""
        if not self.exactly_once:
            # Offsets a rebalance refused go again with the next commit, for the partitions
            # still this worker's: the consumer does not hand their records out twice.
            offsets = {**self.unsaved, **offsets_after(records)}
            owned = self.consumer.assignment()
            offsets = {tp: o for tp, o in offsets.items() if tp in owned}
            committed = commit_offsets(self.consumer, offsets, self.broker_wait)
            self.unsaved = offsets if offsets and not committed else {}
            return
        committing = time.monotonic()

        def waiting() -> None:
            if self.broker_wait is not None:
                self.broker_wait.unanswered(committing, "the batch's transaction")

        # Bounded, unlike kafka-python's own calls: past the transaction timeout the broker
        # aborts the transaction anyway (kafka_compat._complete).
        timeout_s = self.transaction_timeout_s
        try:
            if records:
                kafka_compat.send_offsets_to_transaction(
                    self.producer,
                    offsets_after(records),
                    self.consumer.group_metadata(),
                    timeout_s,
                    waiting,
                )
            kafka_compat.commit_transaction(self.producer, timeout_s, waiting)
        except KafkaError as e:
            self._abort(e, committing)
            raise PublishError(
                f"the batch's transaction failed ({e!r}): stopping; its records are replayed"
            ) from e
        if self.broker_wait is not None:
            self.broker_wait.answered()

    def _abort(self, error: Exception, since: float) -> None:
        """Abort the batch's transaction after `error`; raise TransactionLost when the
        batch waited on the broker (the transaction outlived its timeout meanwhile), or
        when the group moved on under it (its offsets refused: a rebalance, or a member
        the broker put out of the group while it could not reach it)."""
        if not isinstance(error, kafka_compat.TransactionTimeoutError):
            try:
                kafka_compat.abort_transaction(
                    self.producer, self.transaction_timeout_s, lambda: None
                )
            except KafkaError:
                pass  # fenced, fatal or unanswered: the broker aborts it
        if self.new_producer is None or (
            self.broker_wait is not None and self.broker_wait.stopping()
        ):
            return
        if isinstance(error, GROUP_ERRORS):
            why = "the consumer group changed under it"
        elif self._waited_on_broker(since):
            why = "the worker waited on the broker"
        else:
            return
        raise TransactionLost(
            f"the batch's transaction was lost: {why} ({error!r}); scoring its records "
            "again from the committed offsets"
        ) from error

    def _waited_on_broker(self, committing: float) -> bool:
        """Whether this batch waited on an unanswering broker: in its flush, or in the
        commit itself (commit_transaction blocks while the broker is away)."""
        if self.broker_wait is None:
            return False
        slow = time.monotonic() - committing >= self.broker_wait.timeout_s
        return slow or self.broker_wait.last_seen >= self._began


class TransactionLost(PublishError):
    """Exactly-once: the batch's transaction failed after the worker waited on the broker
    for longer than transaction_timeout_ms (the broker aborted it on its own and fenced the
    producer), or its offsets were refused because the group changed. Not a reason to
    stop: its records are scored again (ScoringWorker.redo)."""


# Offsets refused because this member's place in the group changed: a transaction's
# send_offsets_to_transaction fails with these after a rebalance or an expired session.
GROUP_ERRORS = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


@dataclass(frozen=True)
class Decided:
    """A message scored: its decision, and the decision's bytes as published."""

    record: ConsumerRecord
    message: Message
    alert: Alert
    payload: bytes


@dataclass(frozen=True)
class Failed:
    """A message whose encoding or scoring raised, found by isolating it from its batch."""

    record: ConsumerRecord
    message: Message
    stage: str  # "encoding" or "scoring"
    failure: Failure


@dataclass
class Batch:
    """One micro-batch between start() and finish(): its records, the decoded messages,
    the dead letters already sent, and the encoder thread's work on its texts."""

    records: list[ConsumerRecord]
    started: float
    good: list[tuple[ConsumerRecord, Message]] = field(default_factory=list)
    dead: list[tuple[ConsumerRecord, SchemaError]] = field(default_factory=list)
    encoded: Future | None = None  # -> (queries, seconds), one row per `good` message
    rows: list[int] | None = None  # which rows of the queries are still `good`'s
    stage: "StageClock" = field(default_factory=lambda: StageClock())

    def keep(self, partitions: set[int]) -> None:
        """Forget the records of partitions this worker no longer owns."""
        rows = range(len(self.good)) if self.rows is None else self.rows
        kept = [
            (i, g) for i, g in zip(rows, self.good, strict=True) if g[0].partition in partitions
        ]
        self.rows = [i for i, _ in kept]
        self.good = [g for _, g in kept]
        self.dead = [d for d in self.dead if d[0].partition in partitions]
        self.records = [r for r in self.records if r.partition in partitions]


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


class StageClock:
    """Seconds per stage of one batch: lap(name) charges the time since the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str | None) -> None:
        now = time.perf_counter()
        if name is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def _arrival(record: ConsumerRecord, message: Message) -> Arrival:
    """Where a message stands in its recipient's stream: the input offset orders it."""
    recipient = message.passthrough().get("recipient")
    return Arrival(
        message_id=message.id,
        recipient=str(recipient) if isinstance(recipient, str | int) and recipient != "" else None,
        at_ms=record.timestamp if record.timestamp and record.timestamp > 0 else 0,
        seq=record.offset,
        shard=record.partition,
    )


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
        "references": len(detector.index),
        "threshold": detector.params.threshold,
    }


def run_worker(settings: Settings, ready: threading.Event | None = None) -> None:
    """The `fraud worker` process: load, serve metrics, score until SIGTERM/SIGINT."""
    from fraud.scoring.history import RecipientHistory
    from workers.health import serve_metrics
    from workers.kafka.clients import (
        NEVER_EXPIRE_MS,
        ensure_topics,
        make_consumer,
        make_producer,
        make_transactional_clients,
        make_transactional_producer,
        partition_count,
    )
    from workers.state.bank import ensure_bank_topic
    from workers.state.history import ensure_history_topic

    log.info("settings %s", settings.model_dump_json())
    detector = Detector.from_settings(settings)
    registry = CollectorRegistry()
    metrics = build_metrics(registry)
    kafka = settings.kafka
    outputs = [kafka.alert_topic, kafka.dead_letter_topic]
    ensure_topics(
        kafka, [kafka.input_topic, *outputs, *([kafka.scores_topic] * kafka.publish_scores)]
    )
    bank = None
    if detector.index.changelog_offsets:
        ensure_bank_topic(kafka)
        bank = BankFollower(kafka, detector.index)
        bank.catch_up()  # replay what came after the snapshot before scoring anything
    else:
        log.info(
            "index %s is not linked to the bank topic %s (no changelog offsets): not following "
            "it; link it with `fraud index publish` or `fraud index snapshot`",
            settings.index_dir,
            kafka.bank_topic,
        )
    history = None
    if settings.history.enabled:
        ensure_history_topic(kafka, partition_count(kafka, kafka.input_topic))
        history = HistoryState(kafka, RecipientHistory(settings.history))
    # Sends never expire in the producer: a broker that is away is waited for (BrokerWait).
    new_producer = None
    if kafka.exactly_once:
        consumer, producer = make_transactional_clients(kafka, delivery_timeout_ms=NEVER_EXPIRE_MS)
        new_producer = partial(
            make_transactional_producer, kafka, delivery_timeout_ms=NEVER_EXPIRE_MS
        )
    else:
        consumer = make_consumer(kafka)
        producer = make_producer(kafka, delivery_timeout_ms=NEVER_EXPIRE_MS)
    worker = ScoringWorker(
        detector, kafka, consumer, producer, metrics, bank, history, new_producer
    )
    # Alive (/healthz, for a liveness probe) while the loop turns, a batch or an empty poll
    # at least every poll interval, or while it waits on the broker: restarting a worker
    # whose broker is away helps nothing, and would replay its batch. Ready (/readyz) when
    # alive and not waiting on the broker: the wait is reported there and as a metric.
    limit_s = kafka.max_poll_interval_ms / 1000

    def alive() -> bool:
        return time.monotonic() - worker.last_batch_at < limit_s or worker.broker_wait.waiting

    def readyz() -> dict:
        if worker.broker_wait.waiting:
            return readiness(detector, False, worker.broker_wait.describe())
        if not alive():
            return readiness(detector, False, "the scoring loop is stuck")
        return readiness(detector, registry.get_sample_value("fraud_worker_up") == 1)

    server = serve_metrics(
        registry, settings.metrics_host, settings.metrics_port, healthy=alive, readiness=readyz
    )
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
    if ready is not None:
        ready.set()
    try:
        worker.run()
    finally:
        server.shutdown()
        worker.producer.close(timeout=kafka.flush_timeout_ms / 1000)
        consumer.close(autocommit=False)
        if bank is not None:
            bank.close()
        log.info("worker stopped")
