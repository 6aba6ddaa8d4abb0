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
from collections import OrderedDict, defaultdict
from dataclasses import replace

import numpy as np
from kafka.structs import TopicPartition

from fraud.bank import change_key, encode_upsert
from fraud.config import KafkaSettings
from fraud.errors import SchemaError
from fraud.feedback import parse_verdict, verdict_reference
from fraud.index import ReferenceIndex
from fraud.schemas import Alert, parse_message
from workers.bank import BankFollower, ensure_bank_topic
from workers.kafka_clients import (
    commit_through,
    ensure_topics,
    make_consumer,
    make_producer,
    send_dead_letter,
    subscribe_when_known,
)

log = logging.getLogger(__name__)


class RecentMessages:
    """What the processor has seen since it started, by message id (bounded, oldest out):
    the text of each input message, and the evidence of each alert."""

    def __init__(self, kafka: KafkaSettings, capacity: int = 100_000) -> None:
        self.kafka, self.capacity = kafka, capacity
        self.texts: OrderedDict[str, str] = OrderedDict()
        self.evidence: OrderedDict[str, list[int]] = OrderedDict()
        self.consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        tps = []
        for topic in (kafka.input_topic, kafka.alert_topic):
            partitions = self.consumer.partitions_for_topic(topic) or {0}
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve "end" now, not at the first poll

    def poll(self, timeout_ms: int = 0) -> None:
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                if tp.topic == self.kafka.alert_topic:
                    try:
                        alert = Alert.from_bytes(record.value)
                    except ValueError:
                        continue
                    self._remember(
                        self.evidence, alert.message_id, [e.reference_id for e in alert.evidence]
                    )
                    continue
                try:
                    message = parse_message(record.value, self.kafka.max_message_bytes)
                except SchemaError:
                    continue  # the scoring worker dead-letters it
                self._remember(self.texts, message.id, message.text)

    def _remember(self, store: OrderedDict, key: str, value) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.capacity:
            store.popitem(last=False)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class FeedbackProcessor:
    """Verdicts -> bank changes. It follows the bank itself, to know the references it may
    disable: a fraud reference cited as evidence by `disable_after` alerts that analysts
    judged legit is disabled (kept in the bank with the reason, never a key again)."""

    def __init__(self, kafka: KafkaSettings, encoder, disable_after: int = 3) -> None:
        self.kafka, self.encoder, self.disable_after = kafka, encoder, disable_after
        topics = [
            kafka.feedback_topic,
            kafka.input_topic,
            kafka.alert_topic,
            kafka.dead_letter_topic,
        ]
        ensure_topics(kafka, topics)
        ensure_bank_topic(kafka)
        self.recent = RecentMessages(kafka)
        self.bank = BankFollower(kafka, ReferenceIndex(encoder.name, encoder.dim))
        self.bank.catch_up()
        # Per fraud reference, the messages judged legit whose alerts cited it: a set, so a
        # verdict delivered twice (at-least-once) is counted once.
        self.false_positive_citations: defaultdict[int, set[str]] = defaultdict(set)
        self.consumer = make_consumer(kafka, group_id=f"{kafka.group_id}-feedback")
        subscribe_when_known(self.consumer, [kafka.feedback_topic])
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
        self.bank.poll()
        if any(b'"text"' not in (r.value or b"") for r in records):
            # A verdict without its text: give the input topic's latest messages a moment.
            self.recent.poll(timeout_ms=500)
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
                if verdict.verdict == "legit":
                    futures += self._disable_repeat_offenders(verdict)
            except SchemaError as e:
                log.warning(
                    "verdict %s[%d]@%d: %s", record.topic, record.partition, record.offset, e
                )
                futures.append(
                    send_dead_letter(
                        self.producer, self.kafka.dead_letter_topic, record, e.reason, e.detail
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
        # If a rebalance takes the commit, the verdicts are replayed: harmless (the same
        # reference ids; citations are sets).
        commit_through(self.consumer, records)
        self.changes += len(usable)

    def _disable_repeat_offenders(self, verdict) -> list:
        futures = []
        for ref_id in self.recent.evidence.get(verdict.message_id, []):
            self.false_positive_citations[ref_id].add(verdict.message_id)
            count = len(self.false_positive_citations[ref_id])
            if count < self.disable_after or ref_id not in self.bank.index:
                continue
            ref = self.bank.index.reference(ref_id)
            if ref.label != "fraud" or ref.disabled:
                continue
            disabled = replace(
                ref,
                disabled=True,
                changed_by=verdict.analyst,
                reason=f"evidence in {count} alerts judged legit (last: {verdict.message_id})",
            )
            vector = self.bank.index.key_vectors(np.array([ref_id]))[0]
            value = encode_upsert(disabled, vector, self.encoder.name)
            futures.append(self.producer.send(self.kafka.bank_topic, value, key=change_key(ref_id)))
            log.warning("disabling reference %d: %s", ref_id, disabled.reason)
        return futures

    def close(self) -> None:
        self.producer.close(timeout=10)
        self.consumer.close(autocommit=False)
        self.recent.close()
        self.bank.close()
