"""The console's reading thread: the project's topics into the console's database.

One consumer of its own, no consumer group: every partition of the input topic (the
messages' texts, sender, recipient), the alert topic, the feedback topic (verdicts), the
bank topic (its changes, with who and why) and the campaign topic, from the offsets the
database records (the start of each topic for a new database: the database is rebuilt
from the topics). Each poll's records and their offsets are written in one transaction.
A record that cannot be read is logged (topic[partition] offset and why, never its
content) and skipped: the console shows what it can, the workers own the dead letters.
"""

import json
import logging
import threading
import time

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.config import ConsoleSettings, KafkaSettings
from fraud.errors import SchemaError
from fraud.index.changelog import decode_change
from fraud.schemas import Decision, parse_message
from fraud.scoring.verdicts import parse_verdict
from workers.console.store import Store
from workers.kafka import ensure_bank_topic, ensure_topics, make_consumer

log = logging.getLogger(__name__)

PURGE_EVERY_S = 60.0


def console_topics(kafka: KafkaSettings) -> list[str]:
    """The topics the console reads (created if missing, as the processes that write them
    would)."""
    return [
        kafka.input_topic,
        kafka.alert_topic,
        kafka.feedback_topic,
        kafka.bank_topic,
        kafka.campaign_topic,
    ]


class TopicReader:
    """Reads the topics into `store` on a thread until stop(). `caught_up` is set once it
    has read to the ends the topics had when it started."""

    def __init__(self, kafka: KafkaSettings, console: ConsoleSettings, store: Store) -> None:
        self.kafka, self.console, self.store = kafka, console, store
        ensure_topics(kafka, [t for t in console_topics(kafka) if t != kafka.bank_topic])
        ensure_bank_topic(kafka)
        self.consumer: KafkaConsumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        self.partitions = self._assign()
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        self._end = self.consumer.end_offsets(self.partitions)
        self._thread = threading.Thread(target=self._run, name="console-reader", daemon=True)
        self._handlers = {
            kafka.input_topic: self._message,
            kafka.alert_topic: self._alert,
            kafka.feedback_topic: self._verdict,
            kafka.bank_topic: self._bank_change,
            kafka.campaign_topic: self._campaign,
        }

    def _assign(self) -> list[TopicPartition]:
        partitions = []
        for topic in console_topics(self.kafka):
            numbers = self.consumer.partitions_for_topic(topic) or {0}
            partitions += [TopicPartition(topic, p) for p in sorted(numbers)]
        self.consumer.assign(partitions)
        for topic in console_topics(self.kafka):
            known = self.store.offsets(topic)
            for tp in (tp for tp in partitions if tp.topic == topic):
                if tp.partition in known:
                    self.consumer.seek(tp, known[tp.partition])
                else:
                    self.consumer.seek_to_beginning(tp)
        return partitions

    def start(self) -> "TopicReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.stop()
        self._thread.join(30)
        self.consumer.close(autocommit=False)

    def _run(self) -> None:
        purged_at = 0.0
        try:
            while not self.stop_event.is_set():
                self.poll(500)
                if time.monotonic() - purged_at > PURGE_EVERY_S:
                    purged = self.store.purge_texts(self.console.text_retention_s)
                    if purged:
                        log.info("purged the texts of %d messages past the retention", purged)
                    purged_at = time.monotonic()
        except BaseException as e:  # the pages say so; the process goes on serving
            self.error = e
            log.exception("the console stopped reading the topics")

    def poll(self, timeout_ms: int) -> int:
        """Read what is there now (waiting at most timeout_ms); returns how many records."""
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=2000)
        count = 0
        with self.store.transaction() as db:
            for tp, records in polled.items():
                handle = self._handlers[tp.topic]
                for record in records:
                    try:
                        handle(db, record)
                    except SchemaError as e:
                        log.warning(
                            "%s[%d] offset %d skipped: %s",
                            tp.topic,
                            tp.partition,
                            record.offset,
                            e.reason,
                        )
                    count += 1
                self.store.note_offset(db, tp.topic, tp.partition, records[-1].offset + 1)
        if not self.caught_up.is_set() and all(
            self.consumer.position(tp) >= self._end[tp] for tp in self.partitions
        ):
            self.caught_up.set()
        return count

    # -- one record of each topic ----------------------------------------------------------

    def _message(self, db, record) -> None:
        message = parse_message(record.value, self.kafka.max_message_bytes)
        oldest_ms = (time.time() - self.console.text_retention_s) * 1000
        if record.timestamp < oldest_ms:  # read again after the database was lost
            return
        extra = message.passthrough()
        sender, recipient = extra.get("sender"), extra.get("recipient")
        self.store.put_message(db, message.id, message.text, sender, recipient, record.timestamp)

    def _alert(self, db, record) -> None:
        try:
            decision = Decision.from_bytes(record.value or b"")
        except ValueError:
            raise SchemaError("invalid_schema", "not a decision") from None
        if decision.is_alert:
            self.store.put_alert(db, decision, record.timestamp)

    def _verdict(self, db, record) -> None:
        verdict = parse_verdict(record.value)
        self.store.put_verdict(db, verdict, record.timestamp, record.partition, record.offset)

    def _bank_change(self, db, record) -> None:
        change = decode_change(record.key, record.value)
        self.store.put_bank_change(
            db, change, record.value, record.partition, record.offset, record.timestamp
        )

    def _campaign(self, db, record) -> None:
        try:
            campaign = json.loads(record.value or b"")
            campaign["campaign_id"]
        except (ValueError, KeyError, TypeError):
            raise SchemaError("invalid_schema", "not a campaign") from None
        self.store.put_campaign(db, campaign)
