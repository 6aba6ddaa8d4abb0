"""The scoring worker: consume -> score -> publish -> commit, in micro-batches.

Delivery is at-least-once. Input offsets are committed only after the broker has
acknowledged every alert, score record and dead letter produced from them; a crash
before the commit replays the batch, and a replayed alert carries the same key and
alert id as the first. A bad record never stops the worker: it goes to the
dead-letter topic with its original bytes and the reason in a header.

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

Recipient history (fraud/history.py): with a HistoryState, messages that carry a
`recipient` are scored with that recipient's earlier suspicious messages as extra keys;
the changed histories go to the history topic with the batch's decisions, before the
commit, and a rebalance restores the history of the partitions a worker is given.
"""

import logging
import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from fraud.config import KafkaSettings, Settings
from fraud.detector import Detector
from fraud.errors import SchemaError
from fraud.history import Arrival, score_in_order
from fraud.metrics import WorkerMetrics, build_metrics, observe_bank_changes, set_index_gauges
from fraud.schemas import Alert, Message, parse_message
from workers.bank import BankFollower
from workers.history import HistoryState, PartitionListener
from workers.kafka_clients import (
    FLUSH_TIMEOUT_S,
    PublishError,
    await_sends,
    commit_offsets,
    offsets_after,
    send_dead_letter,
    subscribe_when_known,
)

log = logging.getLogger(__name__)

# While a batch is being encoded, how often (ms) the next batch's poll looks whether the
# encoding is done.
ENCODED_CHECK_MS = 5


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
    ) -> None:
        self.detector, self.kafka, self.bank, self.history = detector, kafka, bank, history
        self.consumer, self.producer, self.metrics = consumer, producer, metrics
        self.partitions = PartitionListener(history, kafka.input_topic)
        self.stop_event = threading.Event()
        self.last_batch_at = time.monotonic()
        self._lag_partitions: set = set()
        self._next_offset: dict[int, int] = {}  # per partition: the offset after the last taken
        self._encoder_thread = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self.outputs = Outputs(producer, consumer, kafka.exactly_once)
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
                    self.finish(in_flight)
                elif batch is None and self.outputs.unsaved:
                    self.outputs.commit([])  # idle: retry a commit a rebalance refused
                in_flight = batch
                self._set_lag()
            if in_flight is not None:
                self._wait_polling(in_flight, [])
                self.finish(in_flight)
            self._commit_unsaved_before_leaving()
        finally:
            self.metrics.worker_up.set(0)
            self._encoder_thread.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self.stop_event.set()

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
            batch.encoded = self._encoder_thread.submit(_timed, self.detector.encoder.encode, texts)
        return batch

    def finish(self, batch: "Batch") -> BatchResult:
        """Score a batch in input order, publish its decisions, wait for the acks, and
        commit its offsets."""
        stage = batch.stage
        result = BatchResult(consumed=len(batch.records))
        good = batch.good
        verdicts = []
        if batch.encoded is not None:
            queries, stage.seconds["encode"] = batch.encoded.result()
            stage.lap(None)  # waiting for the encoder thread is not a stage of this batch
            if batch.rows is not None:  # a rebalance took some of its partitions
                queries = queries[batch.rows]
            texts = [m.text for _, m in good]
            arrivals = [_arrival(record, message) for record, message in good]
            history = None
            if self.history is not None:
                history = self.history.history
                self.history.seen(arrivals)
            if good:
                verdicts = score_in_order(
                    self.detector, history, arrivals, queries, texts, timings=stage.seconds
                )
        stage.lap(None)  # search and attention were timed inside
        self.outputs.begin()
        futures = [
            send_dead_letter(
                self.producer, self.kafka.dead_letter_topic, record, e.reason, e.detail
            )
            for record, e in batch.dead
        ]
        if self.history is not None:
            futures += self.history.publish_changes(self.producer)
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        elapsed_ms = (time.monotonic() - batch.started) * 1000
        for (_record, message), verdict in zip(good, verdicts, strict=True):
            alert = self.detector.alert(
                message, verdict, scored_at=scored_at, processing_ms=elapsed_ms
            )
            payload, key = alert.to_bytes(), message.id.encode("utf-8")
            if alert.is_alert:
                futures.append(self.producer.send(self.kafka.alert_topic, payload, key=key))
                result.alerts.append(alert)
            if self.kafka.publish_scores:
                futures.append(self.producer.send(self.kafka.scores_topic, payload, key=key))

        self.outputs.flush(futures)
        stage.lap("publish")
        acked = time.time()
        self.outputs.commit(batch.records)
        stage.lap("commit")
        for name, seconds in stage.seconds.items():
            self.metrics.stage_duration.labels(name).observe(seconds)
        for (record, _), verdict in zip(good, verdicts, strict=True):
            self.metrics.scores.observe(verdict.score)
            if record.timestamp and record.timestamp > 0:
                self.metrics.end_to_end_latency.observe(max(acked - record.timestamp / 1000, 0))

        result.scored, result.dead_letters = len(good), len(batch.dead)
        self.metrics.messages_scored.inc(len(good))
        for alert in result.alerts:
            self.metrics.alerts_published.labels(alert.category or "none").inc()
        for _, e in batch.dead:
            self.metrics.dead_letters.labels(e.reason).inc()
        latency = time.monotonic() - batch.started
        for _ in batch.records:
            self.metrics.processing_latency.observe(latency)
        self._set_history_gauges()
        return result

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
    the acks and the commit replays the batch (duplicates with the same keys).

    Exactly-once (FRAUD_KAFKA__EXACTLY_ONCE): one Kafka transaction per batch holds its
    outputs and its input offsets (send_offsets_to_transaction). A subscriber reading with
    isolation_level=read_committed sees each decision once; a worker that dies mid-batch
    leaves an open transaction that the broker aborts (transaction_timeout_ms), and the
    batch's next owner writes it again.
    """

    def __init__(self, producer: KafkaProducer, consumer: KafkaConsumer, exactly_once: bool):
        self.producer, self.consumer, self.exactly_once = producer, consumer, exactly_once
        self.unsaved: dict = {}  # at-least-once: offsets whose commit a rebalance refused
        if exactly_once:
            producer.init_transactions()

    def begin(self) -> None:
        if self.exactly_once:
            self.producer.begin_transaction()

    def flush(self, futures: Iterable) -> None:
        """Wait for the batch's sends (at-least-once: each must be acknowledged)."""
        if self.exactly_once:
            return  # commit_transaction flushes, and fails if any send failed
        await_sends(self.producer, futures, "the batch")

    def commit(self, records: list[ConsumerRecord]) -> None:
        """Make the batch's input offsets (and, exactly-once, its outputs) durable."""
        if not self.exactly_once:
            # Offsets a rebalance refused go again with the next commit, for the partitions
            # still this worker's: the consumer does not hand their records out twice.
            offsets = {**self.unsaved, **offsets_after(records)}
            owned = self.consumer.assignment()
            offsets = {tp: o for tp, o in offsets.items() if tp in owned}
            self.unsaved = offsets if offsets and not commit_offsets(self.consumer, offsets) else {}
            return
        try:
            if records:
                self.producer.send_offsets_to_transaction(
                    offsets_after(records), self.consumer.group_metadata()
                )
            self.producer.commit_transaction()
        except KafkaError as e:
            try:
                self.producer.abort_transaction()
            except KafkaError:
                pass  # fenced or fatal: the broker aborts it
            raise PublishError(
                f"the batch's transaction failed ({e!r}): stopping; its records are replayed"
            ) from e


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


def run_worker(settings: Settings, ready: threading.Event | None = None) -> None:
    """The `fraud worker` process: load, serve metrics, score until SIGTERM/SIGINT."""
    from fraud.history import RecipientHistory
    from workers.bank import ensure_bank_topic
    from workers.history import ensure_history_topic
    from workers.http import serve_metrics
    from workers.kafka_clients import (
        ensure_topics,
        make_consumer,
        make_producer,
        make_transactional_clients,
        partition_count,
    )

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
    if kafka.exactly_once:
        consumer, producer = make_transactional_clients(kafka)
    else:
        consumer, producer = make_consumer(kafka), make_producer(kafka)
    worker = ScoringWorker(detector, kafka, consumer, producer, metrics, bank, history)
    # Healthy while the loop turns: a batch (or an empty poll) at least every poll interval.
    limit_s = kafka.max_poll_interval_ms / 1000
    server = serve_metrics(
        registry,
        settings.metrics_host,
        settings.metrics_port,
        healthy=lambda: time.monotonic() - worker.last_batch_at < limit_s,
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
        producer.close(timeout=FLUSH_TIMEOUT_S)
        consumer.close(autocommit=False)
        if bank is not None:
            bank.close()
        log.info("worker stopped")
