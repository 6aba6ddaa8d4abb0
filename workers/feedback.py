"""The feedback processor: analyst verdicts in, reference-bank changes out.

It consumes the feedback topic in its own consumer group, turns each verdict into a
reference (fraud/feedback.py), embeds its text, and publishes the change to the bank
topic, which every worker follows. The verdict's text is taken from the verdict, or
from the recent messages of the input topic that the processor keeps in memory (the
decisions it could read carry no text, by design). A verdict it cannot use goes to the
dead-letter topic with the reason. Offsets are committed after the bank acknowledged.
"""

import logging
import threading
from collections import OrderedDict

from kafka.structs import TopicPartition

from fraud.bank import change_key, encode_upsert
from fraud.config import KafkaSettings
from fraud.errors import SchemaError
from fraud.feedback import parse_verdict, verdict_reference
from fraud.schemas import parse_message
from workers.bank import ensure_bank_topic
from workers.kafka_clients import (
    commit_through,
    ensure_topics,
    make_consumer,
    make_producer,
)

log = logging.getLogger(__name__)


class RecentMessages:
    """The last `capacity` messages of the input topic, by id (all partitions, from now on)."""

    def __init__(self, kafka: KafkaSettings, capacity: int = 100_000) -> None:
        self.kafka, self.capacity = kafka, capacity
        self.texts: OrderedDict[str, str] = OrderedDict()
        self.consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        partitions = self.consumer.partitions_for_topic(kafka.input_topic) or {0}
        tps = [TopicPartition(kafka.input_topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve "end" now, not at the first poll

    def poll(self, timeout_ms: int = 0) -> None:
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    message = parse_message(record.value, self.kafka.max_message_bytes)
                except SchemaError:
                    continue  # the scoring worker dead-letters it
                self.texts[message.id] = message.text
                self.texts.move_to_end(message.id)
                while len(self.texts) > self.capacity:
                    self.texts.popitem(last=False)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class FeedbackProcessor:
    def __init__(self, kafka: KafkaSettings, encoder) -> None:
        self.kafka, self.encoder = kafka, encoder
        ensure_topics(kafka, [kafka.feedback_topic, kafka.input_topic, kafka.dead_letter_topic])
        ensure_bank_topic(kafka)
        self.recent = RecentMessages(kafka)
        self.consumer = make_consumer(kafka, group_id=f"{kafka.group_id}-feedback")
        self.consumer.subscribe([kafka.feedback_topic])
        self.producer = make_producer(kafka)
        self.stop_event = threading.Event()
        self.changes = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.recent.poll()
            polled = self.consumer.poll(timeout_ms=self.kafka.batch_timeout_ms)
            records = [r for batch in polled.values() for r in batch]
            if records:
                self.process(records)

    def stop(self) -> None:
        self.stop_event.set()

    def process(self, records) -> None:
        self.recent.poll()
        futures, usable = [], []
        for record in records:
            try:
                verdict = parse_verdict(record.value)
                text = verdict.text or self.recent.texts.get(verdict.message_id)
                if not text:
                    raise SchemaError(
                        "unknown_message",
                        f"no text for message {verdict.message_id}: give it in the verdict",
                    )
                usable.append(verdict_reference(verdict, text))
            except SchemaError as e:
                log.warning(
                    "verdict %s[%d]@%d: %s", record.topic, record.partition, record.offset, e
                )
                headers = [
                    ("dead_letter_reason", e.reason.encode()),
                    ("dead_letter_detail", e.detail.encode("utf-8", "replace")[:1000]),
                ]
                futures.append(
                    self.producer.send(
                        self.kafka.dead_letter_topic,
                        record.value or b"",
                        key=record.key,
                        headers=headers,
                    )
                )
        if usable:
            vectors = self.encoder.encode([ref.text for ref in usable])
            for ref, vector in zip(usable, vectors, strict=True):
                value = encode_upsert(ref, vector, self.encoder.name)
                futures.append(
                    self.producer.send(self.kafka.bank_topic, value, key=change_key(ref.id))
                )
                log.info(
                    "verdict -> reference %d (%s, %s) by %s",
                    ref.id,
                    ref.label,
                    ref.category,
                    ref.changed_by,
                )
        self.producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=0)  # a refused send raises: nothing is committed
        commit_through(self.consumer, records)
        self.changes += len(usable)

    def close(self) -> None:
        self.producer.close(timeout=10)
        self.consumer.close(autocommit=False)
        self.recent.close()
