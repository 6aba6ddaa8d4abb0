"""`fraud setup`: every topic the pipeline uses, created with its partitions and configs.

The input topic and the history topic get the same number of partitions (the history of
input partition p lives in history partition p); the bank, history and citations topics
are compacted. Idempotent: topics that exist are left as they are.
"""

from fraud.config import KafkaSettings
from workers.bank import COMPACTED, end_offsets, ensure_bank_topic
from workers.history import ensure_history_topic
from workers.kafka_clients import ensure_topics


def create_topics(kafka: KafkaSettings, partitions: int) -> None:
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


def bank_is_empty(kafka: KafkaSettings) -> bool:
    return sum(end_offsets(kafka).values()) == 0
