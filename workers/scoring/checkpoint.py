"""The scoring worker's commit protocol: how a batch's outputs and its input offsets become
durable together (the pattern of quix-streams' Checkpoint.commit)."""

import logging
import time
from collections.abc import Callable, Iterable, Sequence

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

from fraud.config import KafkaSettings
from fraud.errors import BrokerRefusedError, BrokerUnavailableError, PublishError
from fraud.schemas import Decision
from workers.kafka import BrokerWait, await_sends, commit_offsets, offsets_after
from workers.kafka import compat as kafka_compat
from workers.runtime import (
    DeadLetter,
    StageClock,
    on_publish_failed,
    publish_dead_letters,
    publish_decisions,
)
from workers.state import HistoryState

log = logging.getLogger(__name__)

# Offsets refused because this member's place in the group changed: a transaction's
# send_offsets_to_transaction fails with these after a rebalance or an expired session.
GROUP_ERRORS = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


class TransactionLost(PublishError):
    """Exactly-once: the batch's transaction failed after the worker waited on the broker
    for longer than transaction_timeout_ms (the broker aborted it on its own and fenced the
    producer), or its offsets were refused because the group changed. Not a reason to
    stop: its records are scored again (ScoringWorker.redo)."""


class Checkpoint:
    """A batch's outputs and its input offsets, made durable together by commit(), in
    these steps:

    1. Begin (begin). Exactly-once: a Kafka transaction opens, to hold all that follows.
    2. Publish the decisions and the dead letters (publish): each decision to the alert
       topic when it is an alert and to the scores topic when the worker publishes every
       decision, keyed by message id; each dead letter with its reason in headers.
    3. Publish the history changelog (publish_history): every recipient whose history
       changed since the last checkpoint, as its whole state. The batch's scoring changes
       histories; so does a bank change that admits confirmed frauds (a checkpoint with
       no decisions and no records: ScoringWorker._bank_changed).
    4. Flush (flush): wait until the broker acknowledged every send of steps 2 and 3. A
       broker that does not answer is waited for (BrokerWait): the batch is held, not
       given up. A send it refused stops the worker here, before any offset is committed.
    5. Commit the offsets (commit_offsets): the offset after each partition's last record.
       At-least-once: the consumer commits them. Exactly-once: they join the transaction,
       which commits: outputs and offsets become durable at once.

    At-least-once (the default): a crash between steps 4 and 5 replays the batch, as
    duplicates with the same keys and alert ids. A commit refused because the group is
    rebalancing is kept (`unsaved`) and goes again with the next commit, for the
    partitions this worker still owns.

    Exactly-once (FRAUD_KAFKA__EXACTLY_ONCE): a subscriber reading with
    isolation_level=read_committed sees each decision once; a worker that dies mid-batch
    leaves an open transaction that the broker aborts (transaction_timeout_ms), and the
    batch's next owner writes it again. A transaction lost while the worker waited on the
    broker raises TransactionLost: the worker reads its partitions again (renew, redo).
    """

    def __init__(
        self,
        producer: KafkaProducer,
        consumer: KafkaConsumer,
        kafka: KafkaSettings,
        history: HistoryState | None = None,
        broker_wait: BrokerWait | None = None,
        new_producer: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        self.producer, self.consumer, self.kafka, self.history = producer, consumer, kafka, history
        self.exactly_once = kafka.exactly_once
        self.broker_wait, self.new_producer = broker_wait, new_producer
        # Beyond this the broker has aborted the transaction: no use waiting on it.
        self.transaction_timeout_s = (kafka.transaction_timeout_ms + kafka.flush_timeout_ms) / 1000
        self.unsaved: dict = {}  # at-least-once: offsets whose commit a rebalance refused
        self._began = time.monotonic()
        if self.exactly_once:
            producer.init_transactions()

    def commit(
        self,
        decisions: Sequence[Decision],
        dead_letters: Sequence[DeadLetter],
        records: list[ConsumerRecord],
        clock: StageClock | None = None,
    ) -> float:
        """Steps 1 to 5 for a batch's `decisions`, `dead_letters` and input `records`;
        `clock` times steps 1-4 as the publish stage and step 5 as the commit stage.
        Returns when the broker had acknowledged the outputs (time.time())."""
        self.begin()
        sends = self.publish(decisions, dead_letters)
        sends += self.publish_history()
        self.flush(sends, records)
        acknowledged = time.time()
        if clock is not None:
            clock.lap("publish")
        self.commit_offsets(records)
        if clock is not None:
            clock.lap("commit")
        return acknowledged

    # -- the steps -------------------------------------------------------------------------

    def begin(self) -> None:
        """Step 1."""
        self._began = time.monotonic()
        if self.exactly_once:
            self.producer.begin_transaction()

    def publish(self, decisions: Iterable[Decision], dead_letters: Iterable[DeadLetter]) -> list:
        """Step 2: the send futures of the decisions and the dead letters."""
        sent = publish_decisions(self.producer, self.kafka, decisions)
        return publish_dead_letters(self.producer, self.kafka, dead_letters) + [
            s.future for s in sent
        ]

    def publish_history(self) -> list:
        """Step 3: the send futures of the history changelog (none without a history)."""
        if self.history is None:
            return []
        return self.history.publish_changes(self.producer)

    def flush(self, futures: Iterable, records: Sequence[ConsumerRecord] = ()) -> None:
        """Step 4: each send acknowledged, and a broker that does not answer waited for.
        Exactly-once too: commit_transaction would flush them, but while the broker is away
        it would block without a word. A send refused: PublishError, and the input
        `records` logged as not committed (on_publish_failed)."""
        try:
            await_sends(self.producer, futures, "the batch", broker_wait=self.broker_wait)
        except PublishError as e:
            if self.exactly_once:
                self._abort(e, time.monotonic())  # TransactionLost: read again, no stop
            on_publish_failed(e, records)
            raise

    def commit_offsets(self, records: list[ConsumerRecord]) -> None:
        """Step 5: the input offsets (and, exactly-once, the outputs) made durable."""
        if self.exactly_once:
            self._commit_transaction(records)
            return
        # Offsets a rebalance refused go again with the next commit, for the partitions
        # still this worker's: the consumer does not hand their records out twice.
        offsets = {**self.unsaved, **offsets_after(records)}
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in owned}
        committed = commit_offsets(self.consumer, offsets, self.broker_wait)
        self.unsaved = offsets if offsets and not committed else {}

    # -- exactly-once ----------------------------------------------------------------------

    def renew(self) -> None:
        """Exactly-once, after TransactionLost: a new producer with the same transactional
        id (the broker fenced the old one when it aborted its transaction, or fences it
        now). Its initialization waits for the broker, however long it is away."""
        assert self.new_producer is not None  # noqa: S101 (TransactionLost needs it)
        self.producer.close(timeout=0)
        self.producer = None
        started = time.monotonic()
        while True:
            try:
                # Building the producer bootstraps it: a broker still restarting (or one
                # that accepts connections but is slow to answer) is waited for too.
                if self.producer is None:
                    self.producer = self.new_producer()
                self.producer.init_transactions()
                break
            except BrokerRefusedError:
                raise  # a refused login or TLS handshake: waiting does not help
            except (KafkaTimeoutError, BrokerUnavailableError):
                if self.broker_wait is None or self.broker_wait.stopping():
                    raise
                self.broker_wait.unanswered(started, "a new transactional producer")

    def _commit_transaction(self, records: list[ConsumerRecord]) -> None:
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
