"""Workarounds that reach into kafka-python's private state: all of them, in one place.

kafka-python's public API does not cover what these need, so they read and drive
attributes that are not part of it and may change in any release. pyproject.toml pins the
version they were written and tested against (TESTED_VERSION), and
tests/workers/kafka/test_compat.py fails if the installed kafka-python is another one or
no longer has the attributes, types and methods listed in PRIVATE_STATE. To take a newer
kafka-python: read its coordinator changes, run that test and
tests/workers/kafka/test_group_consumer.py (the bug below), then move the pin.
"""

import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

# The kafka-python release these workarounds were checked against (pyproject.toml pins it).
TESTED_VERSION = "3.0.12"

# What the workarounds read or call, for the compatibility test: on a consumer with a
# group, `_coordinator` is a kafka.coordinator.consumer.ConsumerCoordinator with these
# methods; rebalance_in_progress() compares its `state` to MemberState.REBALANCING. On a
# transactional producer, `_transaction_manager` is a TransactionManager whose calls
# return a TransactionalRequestResult, and `_sender` is woken up to send them.
PRIVATE_STATE = {
    "KafkaConsumer._coordinator": "kafka.coordinator.consumer.ConsumerCoordinator",
    "ConsumerCoordinator methods": (
        "rebalance_in_progress()",
        "need_rejoin()",
        "request_rejoin()",
        "poll(timeout_ms=...)",
    ),
    "KafkaProducer._transaction_manager": "kafka.producer.transaction_manager.TransactionManager",
    "TransactionManager methods": (
        "send_offsets_to_transaction(offsets, group_metadata)",
        "begin_commit()",
        "begin_abort()",
    ),
    "TransactionalRequestResult": "wait(timeout_ms=...) -> bool, raises its error",
    "KafkaProducer._sender": "kafka.producer.sender.Sender, wakeup()",
}

# How long one poll() of a GroupConsumer goes on driving a rebalance that is under way.
JOIN_WAIT_S = 10.0


class GroupConsumer(KafkaConsumer):
    """KafkaConsumer whose poll() carries a rebalance under way to its end.

    kafka-python 3.0.12 runs a group join (JoinGroup, then SyncGroup) as a task that
    outlives a poll() whose timeout ran out, and finishes it (member state back to
    stable, the new assignment applied, heartbeats resumed) only if a later poll() is
    waiting on it when it completes:
    - a task that completed between two polls is dropped and a fresh JoinGroup sent (a
      leader's fresh JoinGroup starts yet another rebalance: seen 17 in a row with 1 ms
      polls);
    - a later poll() waits on it only while `need_rejoin()` holds. After its first join a
      subscribing leader rejoins once because the topic metadata changed (its first
      assignment used metadata from before the subscription), and its own assignment
      clears that reason while the task is out; if the poll gives up then, the member
      stays "rebalancing" for good: every commit is refused with
      RebalanceInProgressError and the broker drops it once heartbeats stop.
    The scoring worker polls for a few milliseconds while a batch is being encoded, and
    met the second case at about every other start (tests/workers/kafka/test_group_consumer.py).

    So poll() does not return mid-rebalance: it goes on driving the join (asking for it
    again when kafka-python would not) for up to JOIN_WAIT_S, which is what a rebalance
    waiting for a slow member, or a broker that went away mid-join, can cost one poll.
    """

    def poll(self, timeout_ms=0, max_records=None, update_offsets=True):
        records = super().poll(
            timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets
        )
        if self.config["group_id"] is None:
            return records
        coordinator = self._coordinator
        deadline = time.monotonic() + JOIN_WAIT_S
        while coordinator.rebalance_in_progress() and time.monotonic() < deadline:
            if not coordinator.need_rejoin():
                coordinator.request_rejoin()
            coordinator.poll(timeout_ms=100)
        return records


class TransactionTimeoutError(KafkaTimeoutError):
    """A transactional request that did not complete in the time given."""


def send_offsets_to_transaction(
    producer: KafkaProducer, offsets: dict, group_metadata, timeout_s: float, waiting
) -> None:
    """producer.send_offsets_to_transaction(), given up after `timeout_s`."""
    manager = producer._transaction_manager
    _complete(
        producer, manager.send_offsets_to_transaction(offsets, group_metadata), timeout_s, waiting
    )


def commit_transaction(producer: KafkaProducer, timeout_s: float, waiting) -> None:
    """producer.commit_transaction(), given up after `timeout_s`."""
    _complete(producer, producer._transaction_manager.begin_commit(), timeout_s, waiting)


def abort_transaction(producer: KafkaProducer, timeout_s: float, waiting) -> None:
    """producer.abort_transaction(), given up after `timeout_s`."""
    _complete(producer, producer._transaction_manager.begin_abort(), timeout_s, waiting)


def _complete(
    producer: KafkaProducer, result, timeout_s: float, waiting: Callable[[], None]
) -> None:
    """Wait for a transactional request's `result`, calling `waiting()` every second it is
    not done; raise its error, or TransactionTimeoutError after `timeout_s`.

    kafka-python 3.0.12's commit_transaction() and friends wait on it without a timeout,
    and a commit under way when the broker was killed was seen never to complete after the
    broker came back: the worker hung, silent, for good. A transaction that has not
    completed within the broker's transaction timeout is aborted by the broker anyway, so
    the caller can give it up and take a new producer.
    """
    producer._sender.wakeup()
    deadline = time.monotonic() + timeout_s
    while not result.wait(timeout_ms=1000):
        if time.monotonic() >= deadline:
            raise TransactionTimeoutError(
                f"transactional request not completed in {timeout_s:.0f} s"
            )
        waiting()
