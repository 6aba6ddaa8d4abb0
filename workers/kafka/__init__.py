"""Kafka for the workers: clients (clients.py), sends (sends.py), offsets (offsets.py),
topics (topics.py), and kafka-python's missing pieces (compat.py)."""

from workers.kafka.clients import (
    NEVER_EXPIRE_MS,
    cluster_id,
    connection_config,
    default_worker_id,
    make_admin,
    make_consumer,
    make_producer,
    make_transactional_producer,
)
from workers.kafka.compat import GroupConsumer
from workers.kafka.offsets import (
    commit_offsets,
    commit_through,
    offsets_after,
    read_to_end,
    subscribe_when_known,
)
from workers.kafka.sends import FLUSH_TIMEOUT_S, BrokerWait, await_sends, send_dead_letter
from workers.kafka.topics import (
    COMPACTED,
    create_topics,
    ensure_bank_topic,
    ensure_history_topic,
    ensure_topics,
    partition_count,
)

__all__ = [
    "COMPACTED",
    "FLUSH_TIMEOUT_S",
    "NEVER_EXPIRE_MS",
    "BrokerWait",
    "GroupConsumer",
    "await_sends",
    "cluster_id",
    "commit_offsets",
    "commit_through",
    "connection_config",
    "create_topics",
    "default_worker_id",
    "ensure_bank_topic",
    "ensure_history_topic",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "make_transactional_producer",
    "offsets_after",
    "partition_count",
    "read_to_end",
    "send_dead_letter",
    "subscribe_when_known",
]
