"""The recipients' histories as a worker's state, backed by a compacted changelog topic.

The way Kafka Streams keeps a state store: the input topic is keyed by recipient, so each
recipient belongs to one input partition and one worker. Every change to a recipient's
history is written, as that recipient's whole state, to the same partition number of the
history topic (compacted, keyed by recipient, a tombstone when evicted), in the same batch
as the decisions and before the input offsets are committed. When the group gives a
worker partitions, it restores them by reading those history partitions to their end;
when it takes partitions away, the worker drops their recipients. A worker that takes a
partition over therefore scores exactly as the old owner would have (see the seq rule in
fraud/scoring/history.py).
"""

import logging
import threading
import time
from collections import OrderedDict

from kafka import ConsumerRebalanceListener, KafkaProducer

from fraud.config import KafkaSettings
from fraud.errors import SchemaError
from fraud.index.changelog import BankChange
from fraud.scoring.history import (
    UNSPECIFIED,
    Arrival,
    HistoryEntry,
    RecipientHistory,
    decode_state,
    encode_state,
)
from fraud.scoring.verdicts import FEEDBACK_SOURCE
from workers.kafka import read_to_end

log = logging.getLogger(__name__)


class HistoryState:
    """A worker's RecipientHistory, restored from and written to the history topic."""

    def __init__(self, kafka: KafkaSettings, history: RecipientHistory) -> None:
        self.kafka, self.history = kafka, history
        self.restored_records = 0
        self.last_restore_s = 0.0
        # Recently scored messages with a recipient, so a confirmed fraud (a bank change
        # from a verdict) can join its recipient's history.
        self.recent: OrderedDict[str, Arrival] = OrderedDict()

    def seen(self, arrivals: list[Arrival], capacity: int = 50_000) -> None:
        for a in arrivals:
            if a.recipient:
                self.recent[a.message_id] = a
                self.recent.move_to_end(a.message_id)
        while len(self.recent) > capacity:
            self.recent.popitem(last=False)

    def admit_confirmed(self, changes: list[BankChange]) -> list[str]:
        """Add the confirmed frauds among `changes` (references made from a fraud verdict
        on a message this worker scored) to their recipients' history; returns their ids."""
        admitted = []
        for change in changes:
            ref = change.reference
            if ref is None or ref.label != "fraud" or not ref.source.startswith(FEEDBACK_SOURCE):
                continue
            arrival = self.recent.get(ref.source.removeprefix(FEEDBACK_SOURCE))
            if arrival is None:
                continue
            entry = HistoryEntry(
                message_id=arrival.message_id,
                vector=change.vector,
                category=ref.category or UNSPECIFIED,
                score=1.0,
                at_ms=arrival.at_ms,
                seq=arrival.seq,
            )
            self.history.remember(arrival, entry)
            admitted.append(arrival.message_id)
        return admitted

    def restore(self, partitions: list[int], timeout_s: float = 120.0) -> int:
        """Read history partitions `partitions` from the start to their end: returns the
        number of records applied."""
        if not partitions:
            return 0
        started = time.monotonic()
        applied = 0
        for r in read_to_end(self.kafka, self.kafka.history_topic, partitions, timeout_s):
            try:
                entries = None if r.value is None else decode_state(r.value)
            except SchemaError as e:
                log.error("history %s[%d]@%d: %s", r.topic, r.partition, r.offset, e)
                continue
            self.history.restore(r.key.decode("utf-8"), r.partition, entries)
            applied += 1
        self.restored_records += applied
        self.last_restore_s = time.monotonic() - started
        log.info(
            "restored the history of partitions %s: %d records in %.2fs, %d recipients in memory",
            partitions,
            applied,
            self.last_restore_s,
            len(self.history),
        )
        return applied

    def forget(self, partitions: list[int]) -> None:
        dropped = self.history.forget_shards(partitions)
        gone = set(partitions)
        self.recent = OrderedDict((k, a) for k, a in self.recent.items() if a.shard not in gone)
        log.info("partitions %s revoked: dropped %d recipients' history", partitions, dropped)

    def publish_changes(self, producer: KafkaProducer) -> list:
        """Send every recipient changed since the last call; returns the send futures."""
        futures = []
        for recipient, (shard, entries) in self.history.take_changes().items():
            value = None if entries is None else encode_state(entries)
            futures.append(
                producer.send(
                    self.kafka.history_topic,
                    value,
                    key=recipient.encode("utf-8"),
                    partition=shard,
                )
            )
        return futures


class PartitionListener(ConsumerRebalanceListener):
    """Counts the worker's assignments and keeps the history of exactly the input
    partitions it owns (when it keeps history).

    kafka-python calls the listener on its own IO thread, from inside its group machinery;
    blocking there (reading a topic to restore state) stalls the consumer's heartbeats.
    So the callbacks only update the set of partitions kafka-python says this worker owns,
    under a lock, and the worker calls `apply()` on its own thread right after poll()
    returns, before it processes any record: apply() takes that set under the same lock
    and brings the history in line: drop the partitions that went elsewhere, restore the
    ones that are new here (one that stayed was owned by nobody else meanwhile).

    One rule serves both rebalance protocols: a revoked (or lost) partition leaves the
    set, an assigned one joins it. Eager (range, round-robin: the worker's default)
    revokes every partition and then assigns the new set; cooperative (KIP-429, the
    cooperative-sticky assignor) passes only the partitions that leave and those that
    are added, and either call may be absent. The worker drops the records of partitions
    that went elsewhere from the batches it has in hand."""

    def __init__(self, state: HistoryState | None, input_topic: str) -> None:
        self.state, self.input_topic = state, input_topic
        self.owned: set[int] = set()  # the worker's thread's view, as of the last apply()
        self.assignments = 0  # on_partitions_assigned calls: rebalances that gave partitions
        self._lock = threading.Lock()
        self._target: set[int] = set()  # what kafka-python says is owned; under _lock
        self._changed = False  # a callback since the last apply(); under _lock

    def on_partitions_revoked(self, revoked) -> None:
        with self._lock:
            self._target -= self._ours(revoked)
            self._changed = True

    def on_partitions_lost(self, lost) -> None:
        self.on_partitions_revoked(lost)  # the same for the history: not ours any more

    def on_partitions_assigned(self, assigned) -> None:
        with self._lock:
            self._target |= self._ours(assigned)
            self._changed = True
            self.assignments += 1

    def _ours(self, partitions) -> set[int]:
        return {tp.partition for tp in partitions if tp.topic == self.input_topic}

    def apply(self) -> bool:
        """Bring the history in line with the partitions owned now (on the worker's
        thread); True if the owned set changed."""
        with self._lock:
            if not self._changed:
                return False
            now, self._changed = set(self._target), False
            assignments = self.assignments
        log.info(
            "assigned partitions %s of %s (assignment %d)",
            sorted(now),
            self.input_topic,
            assignments,
        )
        if now == self.owned:
            return False
        if self.state is not None:
            if self.owned - now:
                self.state.forget(sorted(self.owned - now))
            if now - self.owned:
                self.state.restore(sorted(now - self.owned))
        self.owned = now
        return True
