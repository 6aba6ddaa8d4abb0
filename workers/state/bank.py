"""The reference bank on Kafka: publish an index, follow the changelog, snapshot it, and
link an index directory to it (`fraud setup`: setup_index).

Every worker follows the bank topic on its own (all partitions assigned, no consumer group),
starting at the offsets its index directory records and applying each change to its
in-memory index as it arrives. Tombstones remove; the topic is compacted.

An index directory that publish or snapshot wrote is linked to the bank: its manifest
records the offsets and which bank they are offsets of (bank_link: the topic and the
Kafka cluster's id). A worker refuses to follow another bank from those offsets, and a
snapshot may replace a directory only when it is linked to the same bank
(fraud/index/files.py).
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from fraud.config import KafkaSettings, Settings
from fraud.data import seed_references_path
from fraud.datasets import read_labeled_csv
from fraud.errors import DataError, SchemaError
from fraud.index import (
    IndexSpec,
    Reference,
    ReferenceIndex,
    build_index,
    read_manifest,
)
from fraud.index.changelog import BankChange, apply_change, change_key, decode_change, encode_upsert
from fraud.index.files import check_writable, describe, index_files_in, linked_to, write_index_dir
from workers.kafka import await_sends, cluster_id, ensure_bank_topic, make_consumer, make_producer

log = logging.getLogger(__name__)


def bank_link(kafka: KafkaSettings) -> dict[str, str]:
    """Which bank this is, as an index manifest records it: topic and cluster id."""
    return {"topic": kafka.bank_topic, "cluster_id": cluster_id(kafka)}


class BankFollower:
    """Tails the bank topic from the index's recorded offsets and applies what comes."""

    def __init__(self, kafka: KafkaSettings, index: ReferenceIndex) -> None:
        if index.bank is not None and index.changelog_offsets:
            here = bank_link(kafka)
            if index.bank != here:
                raise DataError(
                    f"the index's changelog offsets are in bank {index.bank['topic']} of "
                    f"cluster {index.bank['cluster_id']}, not {here['topic']} of cluster "
                    f"{here['cluster_id']}: take a snapshot of this bank into an empty "
                    "directory (`fraud index snapshot --out DIR`) and use that"
                )
        self.kafka, self.index = kafka, index
        self.consumer: KafkaConsumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        partitions = self.consumer.partitions_for_topic(kafka.bank_topic) or {0}
        self.partitions = [TopicPartition(kafka.bank_topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            offset = index.changelog_offsets.get(tp.partition)
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        self.applied = 0
        self.last_applied: list[BankChange] = []  # the changes the last poll() applied

    @classmethod
    def caught_up(cls, kafka: KafkaSettings, index: ReferenceIndex) -> "BankFollower":
        """A follower of the bank topic (created if missing) that has applied every change
        up to the topic's end, before anything is scored; closed again if that fails."""
        ensure_bank_topic(kafka)
        follower = cls(kafka, index)
        try:
            follower.catch_up()
        except BaseException:
            follower.close()
            raise
        return follower

    def poll(self, timeout_ms: int = 0, quiet: bool = False) -> int:
        """Apply every change available now (waiting at most timeout_ms); returns how many."""
        applied = 0
        self.last_applied = []
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                try:
                    change = decode_change(record.key, record.value)
                    outcome = apply_change(self.index, change)
                except SchemaError as e:
                    outcome = f"skipped: {e}"
                if outcome.startswith("skipped"):
                    log.error("bank %s[%d]@%d %s", tp.topic, tp.partition, record.offset, outcome)
                else:
                    applied += 1
                    self.last_applied.append(change)
                self.index.changelog_offsets[tp.partition] = record.offset + 1
        self.applied += applied
        if applied and not quiet:
            log.info("applied %d bank changes: index version %s", applied, self.index.version)
        return applied

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Apply everything up to the topic's current end."""
        end = self.consumer.end_offsets(self.partitions)
        deadline, applied = time.monotonic() + timeout_s, 0
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"bank topic not read to its end within {timeout_s:.0f}s")
            applied += self.poll(timeout_ms=200, quiet=True)
        log.info(
            "bank %s read to its end: %d changes applied, index version %s",
            self.kafka.bank_topic,
            applied,
            self.index.version,
        )
        return applied

    def close(self) -> None:
        self.consumer.close(autocommit=False)


@dataclass(frozen=True)
class FollowState:
    """Whether a follower keeps up with the bank topic, as of the last check."""

    following: bool
    detail: str
    since: float  # time.monotonic() of the last change between following and not


class BankWatch:
    """Tells whether a BankFollower keeps up with the bank topic, from a thread of its own.

    kafka-python's poll() does not raise when the broker is away or the topic was
    deleted: it logs and returns nothing, so the follower alone cannot tell "no changes"
    from "cut off", and a service would go on scoring with an ever older bank, silently.
    Every `every_s` this asks the broker for the topic's end offsets (with a consumer of
    its own: a consumer is not thread-safe) and compares them with the offsets the
    follower's index has applied. Not following: no answer within `timeout_s`, the topic
    unknown, end offsets behind the applied ones (the topic deleted and recreated), or
    changes left unapplied with no progress for `stale_s`; or the follower's own poll
    failing (`poll_failed`). Each change between following and not is logged once (an
    error, then an info line) and handed to `on_change(state)`; `on_check(state)` gets
    every check's outcome (a metric)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        index: ReferenceIndex,
        partitions: list[TopicPartition],
        every_s: float = 5.0,
        timeout_s: float = 5.0,
        stale_s: float = 30.0,
        on_check: Callable[[FollowState], None] | None = None,
    ) -> None:
        self.kafka, self.index, self.partitions = kafka, index, partitions
        self.every_s, self.timeout_s, self.stale_s = every_s, timeout_s, stale_s
        self.on_check = on_check
        self._lock = threading.Lock()
        self._state = FollowState(True, f"following {kafka.bank_topic}", time.monotonic())
        self._poll_error: str | None = None
        self._behind_since: float | None = None  # behind, with no progress since then
        self._applied: dict[int, int] = {}  # the applied offsets at the last check
        self._stop = threading.Event()
        self._consumer: KafkaConsumer = make_consumer(
            kafka, group_id=None, enable_auto_commit=False
        )
        self._thread = threading.Thread(target=self._run, name="bank-watch", daemon=True)

    def start(self) -> "BankWatch":
        self._thread.start()
        return self

    def state(self) -> FollowState:
        with self._lock:
            return self._state

    def poll_failed(self, error: BaseException | None) -> None:
        """The follower's poll raised `error` (None: it succeeded again)."""
        with self._lock:
            self._poll_error = None if error is None else f"reading the bank topic: {error!r}"
        if error is not None:
            self._set(False, self._poll_error)

    def check(self) -> FollowState:
        """One check now (the thread calls it every every_s)."""
        problem = self._problem()
        with self._lock:
            problem = problem or self._poll_error
        return self._set(problem is None, problem or f"following {self.kafka.bank_topic}")

    def _problem(self) -> str | None:
        topic = self.kafka.bank_topic
        try:
            end = self._consumer.end_offsets(self.partitions, timeout_ms=int(self.timeout_s * 1000))
        except KafkaError as e:
            return (
                f"no end offsets for the bank topic {topic} within {self.timeout_s:.0f} s "
                f"(the broker unreachable, or the topic deleted): {e!r}"
            )
        applied = dict(self.index.changelog_offsets)  # one copy: the scoring thread writes it
        went_back = [
            f"{tp.partition}: {end[tp]} < {applied[tp.partition]}"
            for tp in self.partitions
            if end[tp] < applied.get(tp.partition, 0)
        ]
        if went_back:
            return (
                f"the bank topic {topic} ends before what this index applied "
                f"({', '.join(went_back)}): it was deleted or recreated; restart from a "
                "snapshot (`fraud index snapshot`)"
            )
        behind = sum(end[tp] - applied.get(tp.partition, 0) for tp in self.partitions)
        now = time.monotonic()
        if not behind or applied != self._applied:  # up to date, or moving
            self._behind_since = now if behind else None
            self._applied = applied
            return None
        stuck_s = now - (self._behind_since or now)
        if stuck_s >= self.stale_s:
            return f"{behind} changes of the bank topic {topic} not applied for {stuck_s:.0f} s"
        return None

    def _set(self, following: bool, detail: str) -> FollowState:
        with self._lock:
            changed = following != self._state.following
            since = time.monotonic() if changed else self._state.since
            self._state = state = FollowState(following, detail, since)
        if changed and not following:
            log.error("not following the reference bank: %s", detail)
        elif changed:
            log.info("following the reference bank %s again", self.kafka.bank_topic)
        if self.on_check is not None:
            self.on_check(state)
        return state

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception as e:  # a bug here must not pass for "following"
                self._set(False, f"the bank check failed: {e!r}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)
        self._consumer.close(autocommit=False)


def publish_index(
    kafka: KafkaSettings, index: ReferenceIndex, directory: Path | None, force: bool = False
) -> int:
    """Write every reference of `index` to the bank topic; record the end offsets and the
    bank in the index directory (its own, or a new one) so a worker starting from it does
    not replay its own references."""
    if directory is not None:
        check_writable(directory, index, force)  # before anything is sent
    ensure_bank_topic(kafka)
    ids, vectors = index.vectors()
    producer = make_producer(kafka)
    try:
        futures = [
            producer.send(
                kafka.bank_topic,
                encode_upsert(index.reference(int(i)), v, index.model),
                key=change_key(int(i)),
            )
            for i, v in zip(ids, vectors, strict=True)
        ]
        await_sends(producer, futures, "the reference bank")
    finally:
        producer.close(timeout=10)
    if directory is not None:
        index.changelog_offsets = end_offsets(kafka)
        index.bank = bank_link(kafka)
        write_index_dir(directory, index, force=force)
    return len(futures)


def update_reference(
    kafka: KafkaSettings, index: ReferenceIndex, ref_id: int, remove: bool = False, **changes
) -> Reference | None:
    """Publish one change to reference `ref_id` as the bank has it now (the index directory
    plus what the topic added since): relabel, recategorize, weight, disable, or remove
    (a tombstone). `changes` are Reference fields; returns the reference as published."""
    BankFollower.caught_up(kafka, index).close()
    if ref_id not in index:
        raise DataError(f"reference {ref_id} is not in the bank ({len(index)} references)")
    updated = None if remove else replace(index.reference(ref_id), **changes)
    value = None
    if updated is not None:
        value = encode_upsert(updated, index.key_vectors(np.array([ref_id]))[0], index.model)
    producer = make_producer(kafka)
    try:
        producer.send(kafka.bank_topic, value, key=change_key(ref_id)).get(timeout=30)
    finally:
        producer.close(timeout=10)
    return updated


def end_offsets(kafka: KafkaSettings) -> dict[int, int]:
    consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(kafka.bank_topic) or {0}
        tps = [TopicPartition(kafka.bank_topic, p) for p in sorted(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close(autocommit=False)


def snapshot(
    kafka: KafkaSettings, model: str, dim: int, directory: Path, force: bool = False
) -> ReferenceIndex:
    """The bank as the topic has it now, with its offsets, written as `directory`.

    `directory` must hold no index, or a snapshot of this same bank (else DataError, unless
    force): that one's scorer parameters, index type and trained head are kept. A head
    trained before the bank changed no longer matches the snapshot: write_index_dir warns,
    and the detector scores with the parameter-free scorer until it is trained again.
    """
    link = bank_link(kafka)
    previous: dict = {}
    if linked_to(directory, link):
        previous = read_manifest(directory)
    spec = IndexSpec.from_dict((previous.get("index") or {}).get("spec"))
    index = ReferenceIndex(model, dim, previous.get("scorer"), spec)
    index.bank = link
    check_writable(directory, index, force)  # before reading the whole bank
    follower = BankFollower(kafka, index)
    try:
        follower.catch_up()
    finally:
        follower.close()
    write_index_dir(directory, index, force=force)
    return index


# -- `fraud setup`: an index directory linked to the bank ---------------------------------
#
# The index directory (setup_index) follows what the user means, and never replaces a
# user's index silently:
#
# - the bank is empty: the index in the directory is published to it (the README's "Using
#   it": build an index, train it, then set up); an empty or missing directory gets the
#   seed set, built and published;
# - the bank holds references: the directory gets a snapshot of it when it holds no index,
#   or an earlier snapshot of this same bank (its head and scorer parameters kept); an
#   index of another origin is refused in one line saying what to do (--force replaces it).


def bank_is_empty(kafka: KafkaSettings) -> bool:
    return sum(end_offsets(kafka).values()) == 0


def setup_index(settings: Settings, make_encoder, force: bool = False):
    """Link settings.index_dir to the bank by the rules above; returns
    the index written and a line saying what was done. `make_encoder()` is called only
    when the index is built or loaded (a refusal comes before the model is loaded)."""
    kafka, directory = settings.kafka, Path(settings.index_dir)
    holds_index = bool(index_files_in(directory))
    if bank_is_empty(kafka):
        encoder = make_encoder()
        if holds_index:
            index = ReferenceIndex.load(directory, model=encoder.name, dim=encoder.dim)
            what = f"the index in {directory}"
        else:
            seed = read_labeled_csv(seed_references_path())
            index = build_index(encoder, seed, "seed", settings.scorer.model_dump(), False)
            what = "the seed set"
        sent = publish_index(kafka, index, directory)
        return index, f"bank was empty: published {what} ({sent} references)"
    if holds_index and not force and not linked_to(directory, bank_link(kafka)):
        raise DataError(
            f"{directory} holds {describe(directory)}, not a snapshot of the bank "
            f"{kafka.bank_topic}, which already holds references: refusing to replace it. "
            "Give setup an empty --index to snapshot the bank into, or publish "
            f"{directory} to an empty bank (another --bank-topic), or add --force to "
            "replace it with the bank's snapshot"
        )
    encoder = make_encoder()
    index = snapshot(kafka, encoder.name, encoder.dim, directory, force=force)
    return index, f"bank already filled: snapshot at offsets {index.changelog_offsets}"
