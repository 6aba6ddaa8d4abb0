"""The group consumer of make_consumer on the real broker: polls of a millisecond, as the
scoring worker makes while a batch is being encoded, still finish every rebalance
(workers/kafka/compat.py GroupConsumer: kafka-python 3.0.12 alone can leave a member
stuck in one)."""

import time

import pytest
from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, RebalanceInProgressError

from tests.results import record_result
from tests.workers.kafka_helpers import send_raw
from workers.kafka import ensure_topics, make_consumer, offsets_after, subscribe_when_known

pytestmark = pytest.mark.integration

# The race is one of timing: without the workaround about every other start got stuck, so
# four starts in a row would all have to be lucky.
STARTS = 4


class Assignments(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.count = 0

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        self.count += 1


def test_a_member_polling_for_a_millisecond_finishes_its_rebalances(kafka_settings):
    ensure_topics(kafka_settings, [kafka_settings.input_topic])
    send_raw(kafka_settings, kafka_settings.input_topic, [b"one", b"two"])
    for start in range(STARTS):
        kafka = kafka_settings.model_copy(update={"group_id": f"{kafka_settings.group_id}-{start}"})
        consumer = make_consumer(kafka)
        listener = Assignments()
        try:
            subscribe_when_known(consumer, [kafka.input_topic], listener=listener)
            records, refused, committed = [], 0, False
            deadline = time.monotonic() + 20
            while not committed and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=1).values():
                    records.extend(batch)
                if records:
                    try:
                        consumer.commit(offsets_after(records))
                        committed = True
                    except (RebalanceInProgressError, CommitFailedError):
                        refused += 1
        finally:
            consumer.close(autocommit=False)
        print(f"start {start}: {listener.count} assignments, {refused} commits refused")
        assert committed, f"start {start}: still rebalancing after 20s ({refused} refusals)"
        # The first join and the leader's rejoin for the metadata it lacked at the first;
        # not a rebalance after every poll.
        assert listener.count <= 3
        record_result(
            "faults",
            f"short-polls-{start}",
            records=len(records),
            assignments=listener.count,
            commits_refused=refused,
        )


def test_a_message_arriving_alone_is_fetched_though_it_is_below_fetch_min_bytes(kafka_settings):
    """make_consumer asks the broker for the settings' fetch_min_bytes and
    fetch_max_wait_ms; a record far smaller than the first still comes, once the wait ends."""
    kafka = kafka_settings.model_copy(update={"group_id": f"{kafka_settings.group_id}-fetch"})
    ensure_topics(kafka, [kafka.input_topic])
    consumer = make_consumer(kafka)
    try:
        assert consumer.config["fetch_min_bytes"] == kafka.fetch_min_bytes == 16 * 1024
        assert consumer.config["fetch_max_wait_ms"] == kafka.fetch_max_wait_ms == 10
        subscribe_when_known(consumer, [kafka.input_topic])
        send_raw(kafka, kafka.input_topic, [b"alone"])
        values, deadline = [], time.monotonic() + 30
        while b"alone" not in values and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            values += [r.value for records in batches.values() for r in records]
        assert b"alone" in values
    finally:
        consumer.close()
