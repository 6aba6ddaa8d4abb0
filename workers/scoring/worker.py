"""The scoring worker's loop: consume -> score -> publish -> commit, in micro-batches.

Delivery is at-least-once. Input offsets are committed only after the broker has
acknowledged every alert, score record and dead letter produced from them (the commit
protocol: checkpoint.py); a crash before the commit replays the batch, and a replayed
alert carries the same key and alert id as the first. A bad record never stops the
worker: it goes to the dead-letter topic with its original bytes and the reason in a
header (the error policy: runtime.py on_bad_record). That holds for a record that
decodes but whose encoding or scoring raises, too: the batch is split until that message
is found (decide.py), it is dead-lettered (reason scoring_error), and the rest is scored
and committed. A model that fails a known-good probe as well is broken: the worker stops
then, without committing, rather than dead-letter everything.

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
commit (a step of the checkpoint), and a rebalance restores the history of the
partitions a worker is given.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from fraud.config import KafkaSettings
from fraud.errors import PublishError
from fraud.metrics import WorkerMetrics, set_index_gauges
from fraud.scoring.detector import Detector
from workers.kafka import BrokerWait, subscribe_when_known
from workers.runtime import on_bank_change
from workers.scoring.batch import Batch, BatchResult
from workers.scoring.checkpoint import Checkpoint, TransactionLost
from workers.scoring.decide import BatchDecider
from workers.state import BankFollower, HistoryState, PartitionListener

log = logging.getLogger(__name__)

# While a batch is being encoded, how often (ms) the next batch's poll looks whether the
# encoding is done.
ENCODED_CHECK_MS = 5
# Exactly-once: lost transactions scored again in a row before the worker gives up (a
# broker that aborts every one is not an outage that ends).
MAX_REDOS = 10


class ScoringWorker:
    """The loop: poll a batch, decode it, score the one before it, checkpoint, repeat.
    run() until stop(); the consumer, producer and follower are the caller's to close."""

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
        self.consumer, self.metrics = consumer, metrics
        self.partitions = PartitionListener(history, kafka.input_topic)
        self.stop_event = threading.Event()
        self.last_batch_at = time.monotonic()
        self._lag_partitions: set = set()
        self._next_offset: dict[int, int] = {}  # per partition: the offset after the last taken
        self._redone = 0  # exactly-once: transactions lost in a row (TransactionLost)
        self.decider = BatchDecider(detector, history, metrics)
        self.broker_wait = BrokerWait(
            kafka.flush_timeout_ms / 1000, metrics, stopping=self.stop_event.is_set
        )
        self.checkpoint = Checkpoint(
            producer, consumer, kafka, history, self.broker_wait, new_producer
        )
        set_index_gauges(self.metrics, self.detector)

    @property
    def producer(self) -> KafkaProducer:
        """The producer of the outputs (exactly-once: renewed after a lost transaction)."""
        return self.checkpoint.producer

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
                elif batch is None and self.checkpoint.unsaved:
                    self.checkpoint.commit_offsets([])  # idle: retry a commit a rebalance refused
                in_flight = batch
                self._set_lag()
            if in_flight is not None:
                self._wait_polling(in_flight, [])
                self._finish_or_redo(in_flight, None)
            self._commit_unsaved_before_leaving()
        finally:
            self.metrics.worker_up.set(0)
            self.decider.close()

    def stop(self) -> None:
        self.stop_event.set()

    def _finish_or_redo(self, in_flight: Batch, following: Batch | None) -> Batch | None:
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

    def redo(self, following: Batch | None) -> None:
        """Read every partition of this worker's again from its committed offset, as a new
        owner would after a rebalance: a new producer, the batch in the encoder dropped,
        the recipients' histories restored from the history topic."""
        self.decider.drop(following)
        self.checkpoint.renew()
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
        if not self.checkpoint.unsaved:
            return
        self.consumer.poll(timeout_ms=self.kafka.batch_timeout_ms, max_records=1)
        self.checkpoint.commit_offsets([])
        if self.checkpoint.unsaved:
            log.warning(
                "offsets of %d partitions left uncommitted at shutdown: their next owner "
                "replays those records",
                len(self.checkpoint.unsaved),
            )

    def poll_batch(self, in_flight: Batch | None = None) -> list[ConsumerRecord]:
        """Up to max_batch records: a batch is sized by what has arrived.

        With no batch in flight the encoder is idle, so the batch ends with the first poll
        that returns records (that poll waits at most batch_timeout_ms for any): a message
        that finds the worker idle is encoded at once, not after a wait for batchmates.
        With one in flight, the batch ends as soon as that one is encoded: it is then
        finished at once, and this one goes to the encoder (under load, a batch holds what
        arrived during one encoding, up to max_batch). If it was encoded already (while
        the batch before it was being finished), the batch is what has arrived meanwhile.

        It does not end before the one in flight is encoded, though (_wait_polling).
        """
        batch: list[ConsumerRecord] = []
        deadline = time.monotonic() + self.kafka.batch_timeout_ms / 1000
        encoding = in_flight.encoded if in_flight is not None else None
        polled = False
        while len(batch) < self.kafka.max_batch and not self.stop_event.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if encoding is not None:
                if encoding.done():
                    if not polled:
                        # Encoded while the batch before it was being finished: what has
                        # arrived meanwhile goes to the encoder now (a poll that does not
                        # wait), not after the batch in flight is finished in turn.
                        self._poll_into(batch, in_flight, 0)
                    break
                remaining_ms = min(remaining_ms, ENCODED_CHECK_MS)
            elif batch:
                break  # the encoder is idle: what has arrived goes now
            if remaining_ms <= 0:
                break
            self._poll_into(batch, in_flight, remaining_ms)
            polled = True
        if in_flight is not None:
            self._wait_polling(in_flight, batch)
        return batch

    def _wait_polling(self, in_flight: Batch, batch: list[ConsumerRecord]) -> None:
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
        self, batch: list[ConsumerRecord], in_flight: Batch | None, timeout_ms: int
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

    def start(self, records: list[ConsumerRecord]) -> Batch:
        """Decode a batch (what does not decode becomes a dead letter) and hand the texts
        to the encoder thread."""
        self.metrics.messages_consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        batch = Batch.decode(records, self.kafka.max_message_bytes)
        self.decider.start(batch)
        return batch

    def finish(self, batch: Batch) -> BatchResult:
        """Score a batch in input order (a message whose encoding or scoring raised
        becomes a dead letter instead: decide.py), then checkpoint: its decisions and dead
        letters published and acknowledged, its offsets committed (checkpoint.py)."""
        decided, failed = self.decider.decide(batch)
        batch.stage.skip()  # encode, search and attention were timed inside
        dead_letters = batch.dead_letters + [f.dead_letter() for f in failed]
        acknowledged = self.checkpoint.commit(
            [d.alert for d in decided], dead_letters, batch.records, clock=batch.stage
        )
        self._observe(batch, decided, acknowledged)
        for d in dead_letters:
            self.metrics.dead_letters.labels(d.reason).inc()
        self._set_history_gauges()
        alerts = [d.alert for d in decided if d.alert.is_alert]
        return BatchResult(len(batch.records), len(decided), alerts, len(dead_letters))

    def _observe(self, batch: Batch, decided: list, acknowledged: float) -> None:
        """A finished batch's stages, scores, latencies and alerts, as metrics."""
        m = self.metrics
        for name, seconds in batch.stage.seconds.items():
            m.stage_duration.labels(name).observe(seconds)
        for d in decided:
            m.scores.observe(d.alert.score)
            if d.record.timestamp and d.record.timestamp > 0:
                m.end_to_end_latency.observe(max(acknowledged - d.record.timestamp / 1000, 0))
        m.messages_scored.inc(len(decided))
        for d in decided:
            if d.alert.is_alert:
                m.alerts_published.labels(d.alert.category or "none").inc()
        latency = time.monotonic() - batch.started
        for _ in batch.records:
            m.processing_latency.observe(latency)

    def _bank_changed(self) -> None:
        on_bank_change(self.metrics, self.detector, self.bank.last_applied)
        if self.history is None:
            return
        # Frauds an analyst confirmed become history keys of their recipient too (if this
        # worker scored them recently), written to the history topic at once: a
        # checkpoint with no decisions and no records, its step 3 the changed histories.
        admitted = self.history.admit_confirmed(self.bank.last_applied)
        if admitted:
            self.checkpoint.commit([], [], [])
            log.info("confirmed frauds added to their recipients' history: %s", admitted)

    def _set_history_gauges(self) -> None:
        if self.history is not None:
            h = self.history.history
            self.metrics.history_recipients.set(len(h))
            self.metrics.history_entries.set(h.entry_count())
            self.metrics.history_memory.set(h.memory_bytes())
