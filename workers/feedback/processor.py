"""The feedback processor: analyst verdicts in, reference-bank changes out.

It consumes the feedback topic in its own consumer group, turns each verdict into a
reference (fraud/scoring/verdicts.py), embeds its text, and publishes the change to the bank
topic, which every worker follows. The verdict's text is taken from the verdict, or
from the recent messages of the input topic that the processor keeps in memory (the
decisions it could read carry no text, by design). A verdict it cannot use goes to the
dead-letter topic with the reason. Offsets are committed after the bank acknowledged.

It also groups suspicious decisions into campaigns (fraud/scoring/campaigns.py), publishes each
reported campaign to the campaigns topic as it grows, and, when a verdict confirms a
campaign member as fraud, raises retroactive alerts on the members that were let through
and now cross the threshold. It is a single process (its group has one member at a time):
campaigns need the view of every partition at once.

One failing verdict or decision never stops it (fraud/scoring/isolation.py, as in the scoring
worker). A verdict whose text the encoder fails on, or whose processing raises, goes to
the dead-letter topic (reason scoring_error, the exception class in a header): a verdict is
an analyst's work, and a record of the processor's own input, so it is kept for replay. A
decision whose text fails to encode, or a campaign member whose re-scoring fails, is
logged (message id and exception class, never the text), counted in `skipped` and left
out: decisions are the workers' outputs, already delivered, and a campaign only misses one
member. An encoder that fails a known-good probe too is broken: the processor stops with
one line (ModelBrokenError), committing nothing.

Its memory is bounded (README, Reliability and security): the recent input messages by
count and by `feedback_recent_max_bytes` (an estimate per message), the latest alerts by
count and only as the bank references they cite, the decisions awaiting their text by
count and only as campaign members, the campaigns by fraud/scoring/campaigns.py's own
bounds, and the false-positive citations to the most recent MAX_CITATIONS per reference
(recent.py keeps the messages and alerts).

FeedbackProcessor.open does the I/O of a start (topics, the bank caught up, the citations
read back, the clients), closing what it opened if a step fails; main.py is the process.
"""

import json
import logging
import threading
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from fraud.config import CampaignSettings, KafkaSettings
from fraud.errors import PublishError, SchemaError
from fraud.index import ReferenceIndex
from fraud.index.changelog import change_key, encode_upsert
from fraud.schemas import Decision
from fraud.scoring.campaigns import Campaign, CampaignTracker, Member
from fraud.scoring.detector import Detector
from fraud.scoring.isolation import Failure, check_model, isolate, raised_at
from fraud.scoring.verdicts import parse_verdict, verdict_reference
from workers.feedback.recent import BoundedRecent, RecentMessages
from workers.kafka import (
    COMPACTED,
    await_sends,
    commit_through,
    ensure_bank_topic,
    ensure_topics,
    make_consumer,
    make_producer,
    read_to_end,
    subscribe_when_known,
)
from workers.runtime import (
    on_bad_record,
    on_publish_failed,
    publish_dead_letters,
    publish_decisions,
)
from workers.state import BankFollower

log = logging.getLogger(__name__)

# Message ids kept per reference, the most recent: past any disable_after (which
# fraud/config.py caps at this), and enough to recognise a redelivered verdict.
MAX_CITATIONS = 1000
# Decisions awaiting their message's text, at most (campaign members, a few hundred bytes).
MAX_UNDECIDED = 10_000


class Citations:
    """Per fraud reference, the messages judged legit whose alerts cited it: the most
    recent MAX_CITATIONS, in the order they came (an ordered set: a verdict delivered
    twice counts once). Its record on the citations topic lists them oldest first."""

    def __init__(self) -> None:
        self._by_reference: dict[int, OrderedDict[str, None]] = {}

    def add(self, ref_id: int, message_id: str) -> bool:
        """Note a citation; False if that message was already counted."""
        cited = self._by_reference.setdefault(ref_id, OrderedDict())
        if message_id in cited:
            return False
        cited[message_id] = None
        while len(cited) > MAX_CITATIONS:
            cited.popitem(last=False)
        return True

    def count(self, ref_id: int) -> int:
        return len(self._by_reference.get(ref_id, ()))

    def record(self, ref_id: int) -> bytes:
        return json.dumps(list(self._by_reference.get(ref_id, ()))).encode()

    @classmethod
    def read(cls, kafka: KafkaSettings) -> "Citations":
        """The citations as the compacted citations topic has them (a restarted processor
        goes on counting where it stopped)."""
        citations = cls()
        for record in read_to_end(kafka, kafka.citation_topic):
            if record.value is not None:
                citations.load(int(record.key), record.value)
        return citations

    def load(self, ref_id: int, record: bytes) -> None:
        """A record of the citations topic (a list, oldest first; older records were
        sorted by id, taken as they come)."""
        self._by_reference[ref_id] = OrderedDict()
        for message_id in json.loads(record):
            self.add(ref_id, message_id)


class FeedbackProcessor:
    """Verdicts -> bank changes; decisions -> campaigns; confirmed campaign -> retroactive
    alerts.

    It follows the bank itself, to know the references it may disable: a fraud reference
    cited as evidence by `disable_after` alerts that analysts judged legit is disabled
    (kept in the bank with the reason, never a key again). With a `detector` (the worker's
    scoring path, on the index directory the workers start from) it also re-scores the
    let-through members of a campaign once a verdict confirms one of them as fraud.

    Made by open(), which does the I/O; __init__ only assigns. close() closes what open()
    opened (`resources`).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        encoder,
        *,
        recent: RecentMessages,
        bank: BankFollower,
        citations: "Citations",
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        disable_after: int = 3,
        detector: Detector | None = None,
        campaigns: CampaignSettings | None = None,
        resources: ExitStack | None = None,
    ) -> None:
        self.kafka, self.encoder, self.disable_after = kafka, encoder, disable_after
        self.detector, self.recent, self.bank = detector, recent, bank
        # Per fraud reference, the messages judged legit whose alerts cited it. Kept on a
        # compacted topic too, so a restarted processor goes on counting where it stopped.
        self.false_positive_citations = citations
        self.consumer, self.producer = consumer, producer
        self.tracker = CampaignTracker(campaigns or CampaignSettings())
        # Decisions awaiting their text, as the campaign members they will be.
        self.undecided = BoundedRecent(MAX_UNDECIDED)
        self.resources = resources or ExitStack()
        self.stop_event = threading.Event()
        self.changes = 0
        self.retroactive_alerts = 0
        self.skipped = 0  # decisions and campaign members whose encoding or scoring raised

    @classmethod
    def open(
        cls,
        kafka: KafkaSettings,
        encoder,
        disable_after: int = 3,
        detector: Detector | None = None,
        campaigns: CampaignSettings | None = None,
        lookback_s: float = 0.0,
        recent_max_bytes: int = 128 * 2**20,
        bank: BankFollower | None = None,
    ) -> "FeedbackProcessor":
        """A processor ready to run: its topics created, the recent messages read from
        `lookback_s` back, the bank caught up (`bank`, the caller's to close, or a follower
        of its own over the detector's index, or an empty one), the citations read back,
        its consumer subscribed. What was opened is closed again if a step fails."""
        with ExitStack() as stack:
            _ensure_topics(kafka)
            recent = RecentMessages.open(kafka, lookback_s=lookback_s, max_bytes=recent_max_bytes)
            stack.callback(recent.close)
            if bank is None:
                index = detector.index if detector else ReferenceIndex(encoder.name, encoder.dim)
                bank = BankFollower.caught_up(kafka, index)
                stack.callback(bank.close)
            citations = Citations.read(kafka)
            consumer = make_consumer(kafka, group_id=f"{kafka.group_id}-feedback")
            stack.callback(consumer.close, autocommit=False)
            subscribe_when_known(consumer, [kafka.feedback_topic])
            producer = make_producer(kafka)
            stack.callback(producer.close, timeout=10)
            return cls(
                kafka,
                encoder,
                recent=recent,
                bank=bank,
                citations=citations,
                consumer=consumer,
                producer=producer,
                disable_after=disable_after,
                detector=detector,
                campaigns=campaigns,
                resources=stack.pop_all(),
            )

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.track(self.recent.poll())
            polled = self.consumer.poll(timeout_ms=self.kafka.batch_timeout_ms)
            records = [r for batch in polled.values() for r in batch]
            if records:
                self.process(records)

    def stop(self) -> None:
        self.stop_event.set()

    # -- campaigns -------------------------------------------------------------------

    def track(self, decided: list[tuple[Decision, int]]) -> list[Campaign]:
        """Place new decisions into campaigns; publish the reported campaigns that grew."""
        floor = self.tracker.settings.min_score
        for alert, ts in decided:
            if alert.score >= floor:
                recipient = alert.passthrough.get("recipient")
                member = Member(
                    alert.message_id,
                    None if recipient is None else str(recipient),
                    alert.score,
                    alert.is_alert,
                    ts,
                )
                self.undecided.put(alert.message_id, (member, alert.category))
        ready = [self.undecided[m] for m in self.undecided.keys() if m in self.recent.messages]
        if not ready:
            return []
        texts = [self.recent.text(m.message_id) for m, _ in ready]
        vectors = self._each(self.encoder.encode, texts, "encoding decisions' texts")
        grown: dict[str, Campaign] = {}
        for (member, category), vector in zip(ready, vectors, strict=True):
            self.undecided.pop(member.message_id)
            if isinstance(vector, Failure):
                self._skip(member.message_id, vector, "placed in no campaign")
                continue
            campaign = self.tracker.observe(member, vector, category)
            if campaign is not None and self.tracker.reported(campaign):
                grown[campaign.campaign_id] = campaign
        for campaign in grown.values():
            self._publish_campaign(campaign)
        return list(grown.values())

    def _publish_campaign(self, campaign: Campaign):
        value = json.dumps(campaign.record()).encode()
        return self.producer.send(
            self.kafka.campaign_topic, value, key=campaign.campaign_id.encode()
        )

    def _retroactive(self, message_ids: list[str]) -> list:
        """Re-score the let-through members of the campaigns these confirmed frauds belong
        to, with the bank as it is now (the verdicts' own references applied), and alert on
        those that now cross the threshold."""
        if self.detector is None:
            return []
        self.track(self.recent.poll())
        self.bank.catch_up()
        futures = []
        for message_id in message_ids:
            campaign = self.tracker.campaign_of(message_id)
            if campaign is None:
                continue
            campaign.confirmed_by = message_id
            members = [
                m
                for m in campaign.let_through()
                if m.message_id != message_id and m.message_id in self.recent.messages
            ]
            messages = [self.recent.messages[m.message_id] for m in members]
            texts = [m.text for m in messages]
            assessments = self._each(self._rescore, texts, "re-scoring a campaign")
            scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            for member, message, assessment in zip(members, messages, assessments, strict=True):
                if isinstance(assessment, Failure):
                    self._skip(message.id, assessment, "not re-scored")
                    continue
                if not assessment.is_alert:
                    continue
                alert = self.detector.decide(
                    message,
                    assessment,
                    scored_at=scored_at,
                    processing_ms=0.0,
                    retroactive=True,
                    campaign_id=campaign.campaign_id,
                )
                # To the alert topic only: the scores topic has the message's decision.
                sent = publish_decisions(self.producer, self.kafka, [alert], scores=False)
                futures += [s.future for s in sent]
                member.is_alert = True
                self.retroactive_alerts += 1
                log.info("retroactive alert on %s (campaign %s)", message.id, campaign.campaign_id)
            futures.append(self._publish_campaign(campaign))
        return futures

    def _rescore(self, texts: list[str]) -> list:
        """The workers' assessment of each text (the detector's scoring path)."""
        return self.detector.score(self.detector.encode(texts), texts).assessments

    # -- verdicts --------------------------------------------------------------------

    def process(self, records) -> None:
        self.track(self.recent.poll())
        self.bank.poll()
        if any(b'"text"' not in (r.value or b"") for r in records):
            # A verdict without its text: give the input topic's latest messages a moment.
            self.track(self.recent.poll(timeout_ms=500))
        pending, dead = [], []
        for record in records:
            try:
                pending.append((record, *self._read_verdict(record)))
            except Exception as e:  # one verdict's fault: dead-lettered, never stopping here
                dead.append(on_bad_record(e, record, "the verdict"))
        texts = [ref.text for _, _, ref in pending]
        vectors = self._each(self.encoder.encode, texts, "encoding verdicts' texts")
        futures, confirmed, usable = [], [], 0
        for (record, verdict, ref), vector in zip(pending, vectors, strict=True):
            if isinstance(vector, Failure):
                dead.append(on_bad_record(vector.error, record, "the verdict"))
                continue
            try:
                futures += self._apply(verdict, ref, vector, record.timestamp)
            except Exception as e:  # one verdict's fault: dead-lettered, never stopping here
                dead.append(on_bad_record(e, record, "the verdict"))
                continue
            usable += 1
            if verdict.verdict == "fraud":
                confirmed.append(verdict.message_id)
        futures += publish_dead_letters(self.producer, self.kafka, dead)
        self._await(futures, records)
        if confirmed:
            self._await(self._retroactive(confirmed), records)
        # If a rebalance takes the commit, the verdicts are replayed: harmless (the same
        # reference ids; citations are sets; a retroactive alert has the same id again).
        commit_through(self.consumer, records)
        self.changes += usable

    def _read_verdict(self, record) -> tuple:
        """A verdict record's verdict and the reference it makes; SchemaError when it
        cannot be read, or names a message whose text is known nowhere."""
        verdict = parse_verdict(record.value)
        text = verdict.text or self.recent.text(verdict.message_id)
        if not text:
            raise SchemaError(
                "unknown_message",
                f"no text for message {verdict.message_id}: give it in the verdict",
            )
        return verdict, verdict_reference(verdict, text)

    def _apply(self, verdict, ref, vector: np.ndarray, verdict_ms: int) -> list:
        """One verdict's bank changes: the references its false positive disables, then
        its own reference. Returns the send futures."""
        futures = self._disable_repeat_offenders(verdict) if verdict.verdict == "legit" else []
        value = encode_upsert(ref, vector, self.encoder.name, verdict_ms)
        futures.append(self.producer.send(self.kafka.bank_topic, value, key=change_key(ref.id)))
        log.info(
            "verdict -> reference %d (%s, %s) by %s",
            ref.id,
            ref.label,
            ref.category,
            ref.changed_by,
        )
        return futures

    # -- one failing verdict or decision never stops the processor -------------------

    def _each(self, work, texts: list[str], what: str) -> list:
        """work(texts) (encode or score: one result per text) for the texts together,
        or, when that raises, the Failure of each text that fails alone and the others'
        results (fraud/scoring/isolation.py). ModelBrokenError if a known-good probe fails too."""
        if not texts:
            return []
        try:
            return list(work(texts))
        except Exception as e:
            log.error(
                "%s (%d) failed (%s at %s): probing the model, then splitting them to find "
                "the ones that fail",
                what,
                len(texts),
                type(e).__name__,
                raised_at(e),
            )
            check_model(work, e, what)
            return isolate(texts, work, e)

    def _skip(self, message_id: str, failure: Failure, outcome: str) -> None:
        self.skipped += 1
        log.error(
            "message %s %s: %s raised at %s",
            message_id,
            outcome,
            failure.error_class,
            failure.where,
        )

    def _await(self, futures: list, records: list) -> None:
        """The sends acknowledged, else no commit: PublishError stops the processor (the
        verdicts are read again by the next one)."""
        try:
            await_sends(self.producer, futures, "the verdicts' changes")
        except PublishError as e:
            on_publish_failed(e, records)
            raise

    def _disable_repeat_offenders(self, verdict) -> list:
        futures = []
        citations = self.false_positive_citations
        for ref_id in self.recent.bank_evidence(verdict.message_id):
            if citations.add(ref_id, verdict.message_id):
                value = citations.record(ref_id)
                futures.append(
                    self.producer.send(self.kafka.citation_topic, value, key=change_key(ref_id))
                )
            count = citations.count(ref_id)
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
        """Close what open() opened, the last first: producer, consumer, bank follower (if
        it is the processor's own), recent messages."""
        self.resources.close()


def _ensure_topics(kafka: KafkaSettings) -> None:
    """The topics the processor reads and writes."""
    topics = [
        kafka.feedback_topic,
        kafka.input_topic,
        kafka.alert_topic,
        kafka.dead_letter_topic,
        kafka.campaign_topic,
        *([kafka.scores_topic] * kafka.publish_scores),
    ]
    ensure_topics(kafka, topics)
    ensure_topics(kafka, [kafka.citation_topic], configs=COMPACTED)
    ensure_bank_topic(kafka)
