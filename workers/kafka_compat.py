"""Workarounds that reach into kafka-python's private state: all of them, in one place.

kafka-python's public API does not cover what these need, so they read and drive
attributes that are not part of it and may change in any release. pyproject.toml pins the
version they were written and tested against (TESTED_VERSION), and
tests/workers/test_kafka_compat.py fails if the installed kafka-python is another one or
no longer has the attributes, types and methods listed in PRIVATE_STATE. To take a newer
kafka-python: read its coordinator changes, run that test and
tests/workers/test_group_consumer.py (the bug below), then move the pin.
"""

import time

from kafka import KafkaConsumer

# The kafka-python release these workarounds were checked against (pyproject.toml pins it).
TESTED_VERSION = "3.0.12"

# What the workarounds read or call, for the compatibility test: on a consumer with a
# group, `_coordinator` is a kafka.coordinator.consumer.ConsumerCoordinator with these
# methods; rebalance_in_progress() compares its `state` to MemberState.REBALANCING.
PRIVATE_STATE = {
    "KafkaConsumer._coordinator": "kafka.coordinator.consumer.ConsumerCoordinator",
    "ConsumerCoordinator methods": (
        "rebalance_in_progress()",
        "need_rejoin()",
        "request_rejoin()",
        "poll(timeout_ms=...)",
    ),
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
    met the second case at about every other start (tests/workers/test_group_consumer.py).

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
