"""PartitionListener (workers/state/history.py): kafka-python calls it on its own IO thread
during poll(), so the callbacks only note the assignment, under a lock; restoring and
dropping history (reads of a topic) wait for apply() on the worker's thread. Nothing in
them commits either: the worker commits from its loop (Outputs.commit). Unit tests of
both rebalance protocols, and one on the real broker with the cooperative assignor."""

import sys
import threading
import time

import pytest
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.structs import TopicPartition

from workers.kafka import ensure_topics, make_consumer, subscribe_when_known
from workers.state import PartitionListener


class RecordingState:
    """Stands in for HistoryState: records what the listener asked of it, and which
    partitions' history it holds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.held: set[int] = set()

    def restore(self, partitions: list[int]) -> int:
        self.calls.append(("restore", partitions))
        self.held |= set(partitions)
        return 0

    def forget(self, partitions: list[int]) -> None:
        self.calls.append(("forget", partitions))
        self.held -= set(partitions)


def _tps(*partitions: int, topic: str = "in") -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}


def test_the_callbacks_only_note_the_assignment_and_apply_does_the_work():
    """Eager rebalancing (the worker's range assignor): all revoked, the new set assigned."""
    state = RecordingState()
    listener = PartitionListener(state, "in")
    listener.on_partitions_revoked(set())
    listener.on_partitions_assigned(_tps(0, 1) | _tps(0, topic="other"))
    assert state.calls == [] and listener.owned == set()
    assert listener.apply()
    assert state.calls == [("restore", [0, 1])] and listener.owned == {0, 1}

    listener.on_partitions_revoked(_tps(0, 1))
    listener.on_partitions_assigned(_tps(1, 2))
    assert len(state.calls) == 1  # still nothing done on kafka-python's thread
    assert listener.apply()
    assert state.calls[1:] == [("forget", [0]), ("restore", [2])]
    assert listener.owned == {1, 2} and listener.assignments == 2
    listener.on_partitions_revoked(_tps(1, 2))
    listener.on_partitions_assigned(_tps(1, 2))  # the same set again: nothing to do
    assert not listener.apply() and len(state.calls) == 3


def test_cooperative_rebalances_pass_only_the_difference_and_it_is_applied():
    """The cooperative-sticky assignor (KIP-429) passes only the partitions that leave
    (revoked, or lost when the member was evicted) and those added; either may be absent."""
    state = RecordingState()
    listener = PartitionListener(state, "in")
    listener.on_partitions_assigned(_tps(0, 1, 2))
    listener.apply()
    assert listener.owned == {0, 1, 2}

    listener.on_partitions_revoked(_tps(2))  # a second member joins: 2 moves to it
    listener.apply()
    assert state.calls[-1] == ("forget", [2]) and listener.owned == {0, 1}

    listener.on_partitions_assigned(_tps(3))  # a partition added: only it is passed
    listener.apply()
    assert state.calls[-1] == ("restore", [3]) and listener.owned == {0, 1, 3}
    assert state.held == {0, 1, 3}  # 0 and 1 kept their history throughout

    listener.on_partitions_lost(_tps(0, 1, 3))  # evicted from the group
    listener.on_partitions_assigned(_tps(1))  # and back with one partition
    listener.apply()
    assert listener.owned == state.held == {1}
    assert state.calls[-1] == ("forget", [0, 3])


def test_callbacks_from_another_thread_never_wait_for_applys_work_nor_get_lost():
    """The handoff: a callback that comes while apply() restores (a long read on the
    worker's thread) returns at once and is applied by the next apply(); callbacks racing
    applies leave the listener and the history on the last assignment."""
    restoring, release = threading.Event(), threading.Event()

    class SlowState(RecordingState):
        def restore(self, partitions: list[int]) -> int:
            restoring.set()
            assert release.wait(10)
            return super().restore(partitions)

    state = SlowState()
    listener = PartitionListener(state, "in")
    listener.on_partitions_assigned(_tps(0))
    worker = threading.Thread(target=listener.apply)
    worker.start()
    assert restoring.wait(10)

    def rebalance() -> None:  # eager: all revoked, then the new set
        listener.on_partitions_revoked(_tps(0))
        listener.on_partitions_assigned(_tps(0, 1))

    kafka_thread = threading.Thread(target=rebalance)
    kafka_thread.start()
    kafka_thread.join(1)
    assert not kafka_thread.is_alive(), "the callback waited for the restore"
    release.set()
    worker.join(10)
    assert listener.owned == {0}
    listener.apply()
    assert listener.owned == state.held == {0, 1}

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches as often as the interpreter allows
    try:
        for round_ in range(50):
            state = RecordingState()
            listener = PartitionListener(state, "in")
            last: set[int] = set()

            def rebalances(listener=listener, round_=round_) -> None:
                nonlocal last
                for i in range(100):
                    listener.on_partitions_revoked(_tps(*range(5)))
                    last = {(i + round_) % 5, (i + round_ + 2) % 5}
                    listener.on_partitions_assigned(_tps(*last))

            kafka_thread = threading.Thread(target=rebalances)
            kafka_thread.start()
            while kafka_thread.is_alive():
                listener.apply()
            listener.apply()
            assert listener.owned == state.held == last, round_
    finally:
        sys.setswitchinterval(switch)


class Member(threading.Thread):
    """A group member polling on its own thread, as a worker does: after each poll it
    applies its listener and notes (assignment, listener's partitions, history held)."""

    def __init__(self, kafka, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.stop, self.kafka = stop, kafka
        self.consumer = make_consumer(
            kafka, partition_assignment_strategy=(CooperativeStickyAssignor,)
        )
        self.listener = PartitionListener(RecordingState(), kafka.input_topic)
        self.seen: tuple[set[int], set[int], set[int]] = (set(), set(), set())

    def run(self) -> None:
        subscribe_when_known(self.consumer, [self.kafka.input_topic], listener=self.listener)
        while not self.stop.is_set():
            self.consumer.poll(timeout_ms=50)
            self.listener.apply()
            assigned = {tp.partition for tp in self.consumer.assignment()}
            self.seen = (assigned, set(self.listener.owned), set(self.listener.state.held))


@pytest.mark.integration
def test_on_the_real_broker_cooperative_sticky_moves_only_what_it_must(kafka_settings):
    """Two members with kafka-python's cooperative-sticky assignor: when the second joins,
    the first gives up only the partitions that move, and each listener's partitions, and
    history, are its consumer's assignment."""
    kafka = kafka_settings
    ensure_topics(kafka, [kafka.input_topic], partitions=3)
    stop = threading.Event()
    members: list[Member] = []

    def settled(n: int) -> bool:
        seen = [m.seen for m in members]
        return (
            len(seen) == n
            and all(assigned and assigned == owned == held for assigned, owned, held in seen)
            and set().union(*(assigned for assigned, _, _ in seen)) == {0, 1, 2}
        )

    try:
        for n in (1, 2):
            members.append(Member(kafka, stop))
            members[-1].start()
            deadline = time.monotonic() + 60
            while not settled(n):
                assert time.monotonic() < deadline, [m.seen for m in members]
                time.sleep(0.1)
    finally:
        stop.set()
        for m in members:
            m.join(30)
            m.consumer.close(autocommit=False)
    first = members[0].listener.state.calls
    assert first[0] == ("restore", [0, 1, 2])
    assert all(kind == "forget" for kind, _ in first[1:]), first  # kept ones never reloaded
