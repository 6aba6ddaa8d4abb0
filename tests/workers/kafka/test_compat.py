"""The private kafka-python state that workers/kafka/compat.py reads is still there: a newer
kafka-python that renamed or retyped it fails here, by name, rather than as a worker stuck
in a rebalance."""

import inspect
import time
import tomllib

import kafka
import pytest
from kafka.coordinator.base import MemberState
from kafka.coordinator.consumer import ConsumerCoordinator

from tests.paths import REPO_ROOT
from tests.workers.kafka_helpers import Decisions
from workers.kafka import compat as kafka_compat
from workers.kafka import ensure_topics, make_consumer, subscribe_when_known
from workers.kafka.compat import TESTED_VERSION, GroupConsumer

PYPROJECT = REPO_ROOT / "pyproject.toml"


def test_the_installed_kafka_python_is_the_one_the_workarounds_were_tested_with():
    assert kafka.__version__ == TESTED_VERSION, (
        f"kafka-python {kafka.__version__} installed; workers/kafka/compat.py was checked "
        f"against {TESTED_VERSION}: see its docstring before moving the pin"
    )
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert f"kafka-python=={TESTED_VERSION}" in dependencies


def test_record_batches_are_checksummed_in_c():
    """kafka-python computes the CRC-32C of every record batch it writes and, by default,
    of every batch it reads; without the crc32c package it does so in Python, about 100 us
    a kilobyte here (docs/performance.md, "End to end")."""
    import crc32c
    from kafka.record import util

    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value


def test_the_coordinator_methods_the_workaround_calls_exist_with_their_parameters():
    for name in ("rebalance_in_progress", "need_rejoin", "request_rejoin", "poll"):
        assert callable(getattr(ConsumerCoordinator, name, None)), name
    assert "timeout_ms" in inspect.signature(ConsumerCoordinator.poll).parameters
    assert {"STABLE", "REBALANCING"} <= set(vars(MemberState))
    assert issubclass(GroupConsumer, kafka.KafkaConsumer)
    assert "update_offsets" in inspect.signature(kafka.KafkaConsumer.poll).parameters


@pytest.mark.integration
def test_a_group_consumer_holds_the_coordinator_state_it_reads(kafka_settings):
    ensure_topics(kafka_settings, [kafka_settings.input_topic])
    consumer = make_consumer(kafka_settings)
    try:
        assert isinstance(consumer, GroupConsumer)
        coordinator = consumer._coordinator
        assert type(coordinator) is ConsumerCoordinator
        subscribe_when_known(consumer, [kafka_settings.input_topic])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)  # joins the group
        assert coordinator.state is MemberState.STABLE
        assert coordinator.rebalance_in_progress() is False
        assert isinstance(coordinator.need_rejoin(), bool)  # a leader may rejoin once
        coordinator.request_rejoin()
        assert coordinator.need_rejoin() is True
        # A rejoin asked for is carried to its end by one short poll (the workaround's
        # loop), and the coordinator's state says so.
        consumer.poll(timeout_ms=1)
        assert coordinator.rebalance_in_progress() is False
        assert coordinator.state is MemberState.STABLE
        assert consumer.assignment(), "the rejoin ended without an assignment"
    finally:
        consumer.close(autocommit=False)


def test_the_transaction_manager_calls_exist_with_their_parameters():
    from kafka.producer.sender import Sender
    from kafka.producer.transaction_manager import TransactionalRequestResult, TransactionManager

    for name in ("send_offsets_to_transaction", "begin_commit", "begin_abort"):
        assert callable(getattr(TransactionManager, name, None)), name
    assert "timeout_ms" in inspect.signature(TransactionalRequestResult.wait).parameters
    assert callable(Sender.wakeup)


@pytest.mark.integration
def test_a_transaction_commits_and_aborts_through_the_bounded_calls(kafka_settings):
    from kafka.producer.transaction_manager import TransactionManager

    from workers.kafka import make_transactional_producer

    ensure_topics(kafka_settings, [kafka_settings.scores_topic])
    producer = make_transactional_producer(kafka_settings)
    try:
        assert type(producer._transaction_manager) is TransactionManager
        producer.init_transactions()
        waited = []
        for finish in (kafka_compat.commit_transaction, kafka_compat.abort_transaction):
            producer.begin_transaction()
            producer.send(kafka_settings.scores_topic, b"x", key=finish.__name__.encode())
            producer.flush(10)  # on the broker, so an abort has something to abort
            finish(producer, 30, lambda: waited.append(1))
        assert waited == []  # the broker answered within the first second
    finally:
        producer.close(timeout=10)
    seen = {}
    for isolation in ("read_uncommitted", "read_committed"):
        reader = Decisions(kafka_settings, isolation)
        seen[isolation] = dict(reader.read_to_end())
        reader.close()
    assert seen == {
        "read_uncommitted": {"commit_transaction": 1, "abort_transaction": 1},
        "read_committed": {"commit_transaction": 1},
    }
