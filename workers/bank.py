"""The reference bank on Kafka: publish an index, follow the changelog, snapshot it.

Every worker follows the bank topic on its own (all partitions assigned, no consumer group),
starting at the offsets its index directory records and applying each change to its
in-memory index as it arrives. Tombstones remove; the topic is compacted.

An index directory that publish or snapshot wrote is linked to the bank: its manifest
records the offsets and which bank they are offsets of (bank_link: the topic and the
Kafka cluster's id). A worker refuses to follow another bank from those offsets, and a
snapshot may replace a directory only when it is linked to the same bank
(fraud/index_dir.py).
"""

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.bank import BankChange, apply_change, change_key, decode_change, encode_upsert
from fraud.config import KafkaSettings
from fraud.errors import DataError, SchemaError
from fraud.index import IndexSpec, Reference, ReferenceIndex, read_manifest
from fraud.index_dir import check_writable, linked_to, write_index_dir
from workers.kafka_clients import (
    await_sends,
    cluster_id,
    ensure_topics,
    make_consumer,
    make_producer,
)

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


def ensure_bank_topic(kafka: KafkaSettings) -> None:
    ensure_topics(kafka, [kafka.bank_topic], configs=COMPACTED)


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
    ensure_bank_topic(kafka)
    follower = BankFollower(kafka, index)
    try:
        follower.catch_up()
    finally:
        follower.close()
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
