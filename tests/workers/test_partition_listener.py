"""PartitionListener (workers/history.py) without a broker: kafka-python calls it on its
own network thread during poll(), so the callbacks only note the assignment; restoring
and dropping history (reads of a topic) wait for apply() on the worker's thread. Nothing
in them commits either: the worker commits from its loop (Outputs.commit)."""

from kafka.structs import TopicPartition

from workers.history import PartitionListener


class RecordingState:
    """Stands in for HistoryState: records what the listener asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def restore(self, partitions: list[int]) -> int:
        self.calls.append(("restore", partitions))
        return 0

    def forget(self, partitions: list[int]) -> None:
        self.calls.append(("forget", partitions))


def test_the_callbacks_only_note_the_assignment_and_apply_does_the_work():
    state = RecordingState()
    listener = PartitionListener(state, "in")
    listener.on_partitions_revoked(set())
    listener.on_partitions_assigned(
        {TopicPartition("in", 0), TopicPartition("in", 1), TopicPartition("other", 0)}
    )
    assert state.calls == [] and listener.owned == set()
    listener.apply()
    assert state.calls == [("restore", [0, 1])] and listener.owned == {0, 1}

    listener.on_partitions_revoked({TopicPartition("in", 0), TopicPartition("in", 1)})
    listener.on_partitions_assigned({TopicPartition("in", 1), TopicPartition("in", 2)})
    assert len(state.calls) == 1  # still nothing done on kafka-python's thread
    listener.apply()
    assert state.calls[1:] == [("forget", [0]), ("restore", [2])]
    assert listener.owned == {1, 2} and listener.assignments == 2
