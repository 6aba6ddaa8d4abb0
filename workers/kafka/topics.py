"""The pipeline's topics: created when missing, never changed when they exist.

The input topic and the history topic get the same number of partitions (the history of
input partition p lives in history partition p); the bank, history and citations topics
are compacted (each key's latest record is its state). `fraud setup` creates them all
(create_topics); each process also makes sure of the ones it uses before it starts.
"""

import logging

from kafka.errors import KafkaError, TopicAlreadyExistsError

from fraud.config import KafkaSettings
from fraud.errors import BrokerUnavailableError, FraudError
from workers.kafka.clients import make_admin, make_consumer

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


def ensure_topics(
    kafka: KafkaSettings,
    topics: list[str],
    partitions: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create any of `topics` that do not exist yet (idempotent), with topic `configs`."""
    admin = make_admin(kafka)
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        if missing:
            spec = {
                t: {
                    "num_partitions": partitions,
                    "replication_factor": -1,
                    "configs": configs or {},
                }
                for t in missing
            }
            try:
                admin.create_topics(spec, wait_for_metadata=True)
                log.info("created topics %s", ", ".join(missing))
            except TopicAlreadyExistsError:
                pass  # created concurrently by another worker
    except KafkaError as e:
        raise BrokerUnavailableError(f"could not create topics {topics}: {e}") from None
    finally:
        admin.close()


def partition_count(kafka: KafkaSettings, topic: str) -> int:
    consumer = make_consumer(kafka, group_id=None)
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close(autocommit=False)


def ensure_bank_topic(kafka: KafkaSettings) -> None:
    """The reference bank's changelog: compacted, keyed by reference id."""
    ensure_topics(kafka, [kafka.bank_topic], configs=COMPACTED)


def ensure_history_topic(kafka: KafkaSettings, partitions: int) -> None:
    """The compacted history topic, with as many partitions as the input topic (the state
    of input partition p lives in history partition p)."""
    ensure_topics(kafka, [kafka.history_topic], partitions=partitions, configs=COMPACTED)
    have = partition_count(kafka, kafka.history_topic)
    if have < partitions:
        raise FraudError(
            f"history topic {kafka.history_topic} has {have} partitions, the input topic "
            f"{kafka.input_topic} has {partitions}: give it as many (kafka-topics --alter)"
        )


def create_topics(kafka: KafkaSettings, partitions: int) -> None:
    """Every topic the pipeline uses (`fraud setup`), the input topic with `partitions`."""
    ensure_topics(kafka, [kafka.input_topic], partitions=partitions)
    ensure_history_topic(kafka, partitions)
    ensure_bank_topic(kafka)
    ensure_topics(kafka, [kafka.citation_topic], configs=COMPACTED)
    ensure_topics(
        kafka,
        [
            kafka.alert_topic,
            kafka.scores_topic,
            kafka.dead_letter_topic,
            kafka.feedback_topic,
            kafka.campaign_topic,
        ],
    )
