"""Input offsets: what a commit of finished records says, committing it, subscribing, and
reading a compacted topic back into memory.

The committed offset is the next one to read (kafka-python's rule): offsets_after gives,
per partition, the offset after the last record finished.
"""

import logging
import time
from collections.abc import Iterator

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, RebalanceInProgressError, RetriableError
from kafka.structs import OffsetAndMetadata, TopicPartition

from fraud.config import KafkaSettings
from fraud.errors import BrokerUnavailableError
from workers.kafka.clients import make_consumer
from workers.kafka.sends import BrokerWait

log = logging.getLogger(__name__)


def offsets_after(records: list) -> dict[TopicPartition, OffsetAndMetadata]:
    """Per partition, the offset after the last of `records`: what a commit of them says."""
    next_offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        next_offsets[tp] = max(next_offsets.get(tp, 0), r.offset + 1)
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items()}


def commit_through(consumer: KafkaConsumer, records: list) -> bool:
    """Commit, per partition, the offset after the last of `records`: what was finished.

    False when the group was rebalancing or the broker unreachable (commit_offsets)."""
    return commit_offsets(consumer, offsets_after(records))


def commit_offsets(
    consumer: KafkaConsumer, offsets: dict, broker_wait: BrokerWait | None = None
) -> bool:
    """Commit `offsets`; False when the group was rebalancing. A partition that moved is
    replayed by its new owner from its last committed offset (at-least-once; the outputs
    carry the same keys); for one this consumer keeps, the caller commits again later.

    False too when the broker could not be reached (stopped, paused, cut off: a retriable
    error, after request_timeout_ms at most): kafka-python 3 gives up on a commit then
    rather than waiting for the broker, and raised it out of the worker's loop. The
    caller commits again later, as for a partition it keeps; `broker_wait` hears of it.
    """
    started = time.monotonic()
    try:
        consumer.commit(offsets)
    except (CommitFailedError, RebalanceInProgressError) as e:
        log.warning(
            "commit of %d partitions' offsets lost to a rebalance (%s)",
            len(offsets),
            type(e).__name__,
        )
        return False
    except RetriableError as e:
        log.warning(
            "commit of %d partitions' offsets failed, the broker unreachable (%s)",
            len(offsets),
            e,
        )
        if broker_wait is not None:
            broker_wait.unanswered(started, "a commit")
        return False
    if broker_wait is not None:
        broker_wait.answered()
    return True


def subscribe_when_known(
    consumer: KafkaConsumer, topics: list[str], timeout_s: float = 30, listener=None
) -> None:
    """Subscribe once the consumer's own metadata has every topic's partitions.

    A group member that joins while a just-created topic is missing from its metadata is
    assigned nothing for it, and may not ask again for minutes (metadata_max_age_ms).
    """
    deadline = time.monotonic() + timeout_s
    while not all(consumer.partitions_for_topic(t) for t in topics):
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"topics {topics} unknown to the broker after {timeout_s}s"
            )
        time.sleep(0.2)
    consumer.subscribe(topics, listener=listener)


def read_to_end(
    kafka: KafkaSettings, topic: str, partitions: list[int] | None = None, timeout_s: float = 120
) -> Iterator[ConsumerRecord]:
    """Every record of `topic` (or of its `partitions`) from the start up to the end it had
    when called: how a compacted topic is read back into memory. Committed records only:
    an exactly-once worker's state written in a transaction that was then aborted (the
    worker killed, or the transaction lost in an outage) is not its state."""
    consumer = make_consumer(kafka, group_id=None, isolation_level="read_committed")
    try:
        if partitions is None:
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"{topic} {partitions} not read within {timeout_s}s")
            for tp, records in consumer.poll(timeout_ms=200).items():
                yield from (r for r in records if r.offset < end[tp])
    finally:
        consumer.close(autocommit=False)
