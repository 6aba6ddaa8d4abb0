"""What the feedback processor has seen lately, by message id, bounded: the input
messages (their texts: a verdict may come without one) and, for the latest alerts, the
bank references they cite (read from the alert and scores topics).

Its memory is bounded (README, Reliability and security): the recent input messages by
count and by `feedback_recent_max_bytes` (an estimate per message), the latest alerts by
count and only as the bank references they cite.
"""

import sys
import time
from collections import OrderedDict

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.config import KafkaSettings
from fraud.errors import SchemaError
from fraud.schemas import Decision, Message, parse_message
from workers.kafka import make_consumer

# What a recent input message costs beyond its text and the rest of its record, in bytes,
# and how much more than its size in the record the rest (id, recipient, metadata) costs
# once parsed into Python objects. Measured with tracemalloc on CPython 3.11, on UCI
# messages with a recipient: about 990 bytes beyond the text; a small metadata object
# costs about 7 times its size, which the overhead covers with the factor 5, so that the
# estimate stays above what is held (tests/workers/feedback/test_bounds.py).
MESSAGE_OVERHEAD_BYTES = 900
REST_FACTOR = 5


def message_bytes(message: Message, raw_size: int) -> int:
    """What one kept message costs, by estimate: the text as Python holds it (1, 2 or 4
    bytes a character), the rest of its record REST_FACTOR times, and the overhead."""
    rest = max(raw_size - len(message.text), 0)
    return MESSAGE_OVERHEAD_BYTES + sys.getsizeof(message.text) + REST_FACTOR * rest


class BoundedRecent:
    """An ordered map, oldest first, bounded by a count and by bytes (each value's size
    given when it is put): the oldest go first beyond either."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0

    def put(self, key: str, value, size: int = 0) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.capacity or (
            self.max_bytes is not None and self.bytes > self.max_bytes and len(self._items) > 1
        ):
            _, (_, gone) = self._items.popitem(last=False)
            self.bytes -= gone

    def pop(self, key: str):
        value, size = self._items.pop(key)
        self.bytes -= size
        return value

    def discard(self, key: str) -> None:
        if key in self._items:
            self.pop(key)

    def keys(self) -> list[str]:
        return list(self._items)

    def get(self, key: str, default=None):
        item = self._items.get(key)
        return default if item is None else item[0]

    def __getitem__(self, key: str):
        return self._items[key][0]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class RecentMessages:
    """What the processor has seen since it started, by message id (bounded, oldest out):
    each input message (text and passthrough fields), and for the latest alerts the bank
    references they cite as evidence (from the alerts topic, and the scores topic when
    the workers publish every decision)."""

    def __init__(
        self, kafka: KafkaSettings, consumer: KafkaConsumer, capacity: int, max_bytes: int
    ) -> None:
        self.kafka, self.consumer, self.capacity = kafka, consumer, capacity
        self.messages = BoundedRecent(capacity, max_bytes)
        self.decisions = BoundedRecent(capacity)  # alerts only: their bank evidence ids

    @classmethod
    def open(
        cls,
        kafka: KafkaSettings,
        capacity: int = 100_000,
        lookback_s: float = 0.0,
        max_bytes: int = 128 * 2**20,
    ) -> "RecentMessages":
        """Read from the end of the input, alert and scores topics as they are now, or from
        `lookback_s` back, so a restarted processor still knows the texts and decisions of
        recent messages (and rebuilds its campaigns from them)."""
        consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        try:
            _seek(consumer, kafka, lookback_s)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        return cls(kafka, consumer, capacity, max_bytes)

    def poll(self, timeout_ms: int = 0) -> list[tuple[Decision, int]]:
        """Read what arrived; returns the new decisions with their Kafka timestamps."""
        decided = []
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                if tp.topic == self.kafka.input_topic:
                    try:
                        message = parse_message(record.value, self.kafka.max_message_bytes)
                    except SchemaError:
                        continue  # the scoring worker dead-letters it
                    self.messages.put(
                        message.id, message, message_bytes(message, len(record.value))
                    )
                    continue
                try:
                    alert = Decision.from_bytes(record.value)
                except ValueError:
                    continue
                if alert.is_alert:
                    cited = tuple(e.reference_id for e in alert.evidence if e.source == "bank")
                    self.decisions.put(alert.message_id, cited)
                else:  # the latest decision counts: no longer an alert
                    self.decisions.discard(alert.message_id)
                decided.append((alert, record.timestamp))
        return decided

    def text(self, message_id: str) -> str | None:
        message = self.messages.get(message_id)
        return None if message is None else message.text

    def bank_evidence(self, message_id: str) -> list[int]:
        """The bank references an alert on `message_id` cited ([] if it was no alert)."""
        return list(self.decisions.get(message_id, ()))

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def _seek(consumer: KafkaConsumer, kafka: KafkaSettings, lookback_s: float) -> None:
    """Assign every partition of the topics RecentMessages reads, at their end or
    `lookback_s` back, the start resolved now (not at the first poll)."""
    topics = [kafka.input_topic, kafka.alert_topic]
    if kafka.publish_scores:
        topics.append(kafka.scores_topic)
    tps = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    if lookback_s > 0:
        since = int((time.time() - lookback_s) * 1000)
        found = consumer.offsets_for_times({tp: since for tp in tps})
        for tp, hit in found.items():
            if hit is not None:
                consumer.seek(tp, hit.offset)
    for tp in tps:
        consumer.position(tp)
