"""Kafka client construction from KafkaSettings: the one place client options are chosen."""

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    RetriableError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from fraud.config import KafkaSettings
from fraud.errors import BrokerRefusedError, BrokerUnavailableError, FraudError
from workers.kafka.compat import GroupConsumer

log = logging.getLogger(__name__)

# The longest wait between two tries to reach a broker that went away. kafka-python's
# default (30 s, doubling from 50 ms) kept a worker idle seconds after its broker was back
# (tests/workers/scoring/test_broker_faults.py); 1 s is the Java client's default.
RECONNECT_BACKOFF_MAX_MS = 1000


def connection_config(kafka: KafkaSettings) -> dict:
    """What every client needs to reach and log in to the brokers: the address and the
    security settings. Each client this project builds starts from it, so none can
    connect in the clear where the settings ask for TLS and SCRAM."""
    config: dict = dict(
        bootstrap_servers=kafka.bootstrap_servers,
        bootstrap_timeout_ms=kafka.bootstrap_timeout_ms,
        security_protocol=kafka.security_protocol,
    )
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # noqa: S101 (KafkaSettings checked it)
        config.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    if kafka.security_protocol.endswith("SSL"):
        config.update(
            ssl_cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            ssl_check_hostname=kafka.ssl_check_hostname,
        )
    return config


def _connect(cls, kafka: KafkaSettings, config: dict):
    """`cls(**config)`; a client that could not bootstrap raises one error saying why.

    kafka-python reports a refused login or TLS handshake only in its log, then times out
    as if no broker were there (KafkaTimeoutError). A plain TCP connection to the first
    address tells the two apart: something listens there, so it refused this client.
    """
    try:
        return cls(**config)
    except KafkaTimeoutError:
        pass
    servers = kafka.bootstrap_servers
    host, _, port = servers.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    except (OSError, ValueError):
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {servers}: start one (`python -m workers.broker`) "
            "or set FRAUD_KAFKA__BOOTSTRAP_SERVERS"
        ) from None
    waited = f"within {kafka.bootstrap_timeout_ms} ms"
    if kafka.security_protocol == "PLAINTEXT":
        raise BrokerUnavailableError(
            f"the Kafka broker at {servers} accepts connections but did not answer {waited}: "
            "still starting, or does the listener want TLS (FRAUD_KAFKA__SECURITY_PROTOCOL)?"
        ) from None
    if kafka.security_protocol == "SSL":
        what, check = "TLS handshake", "FRAUD_KAFKA__SSL_CAFILE"
    else:
        what = (
            f"{kafka.security_protocol} login as '{kafka.sasl_username}' ({kafka.sasl_mechanism})"
        )
        check = "FRAUD_KAFKA__SASL_USERNAME, FRAUD_KAFKA__SASL_PASSWORD, FRAUD_KAFKA__SSL_CAFILE"
    raise BrokerRefusedError(
        f"the Kafka broker at {servers} accepts connections, but this client's {what} did "
        f"not succeed {waited}: check FRAUD_KAFKA__SECURITY_PROTOCOL, {check}"
    ) from None


def make_consumer(kafka: KafkaSettings, **overrides) -> KafkaConsumer:
    """A group consumer that never commits on its own: the worker commits what it finished."""
    config = dict(
        **connection_config(kafka),
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_batch,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=min(3000, kafka.session_timeout_ms // 3),
        request_timeout_ms=kafka.request_timeout_ms,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        fetch_max_bytes=max(52_428_800, kafka.max_message_bytes * 4),
        max_partition_fetch_bytes=max(1_048_576, kafka.max_message_bytes * 2),
    )
    config.update(overrides)
    return _connect(GroupConsumer, kafka, config)


# How long the feedback processor and `fraud bank publish` wait for the broker's
# acknowledgements before they give up (the scoring worker waits on: BrokerWait).
FLUSH_TIMEOUT_S = 60.0

# The scoring worker's producers never expire a send (kafka-python's default gives up after
# 120 s): while the broker is away their sends wait in the producer, and the worker waits
# for them (BrokerWait) instead of stopping. 2**31 - 1 ms: about 25 days.
NEVER_EXPIRE_MS = 2**31 - 1


class PublishError(FraudError):
    """The broker did not acknowledge some sends: what produced them is not committed."""

    retriable = True


class BrokerWait:
    """A scoring worker's wait for a broker that does not answer, rather than stopping.

    A worker that quit during a broker outage needed a person to restart it. Now, when a
    batch's sends are not acknowledged within `timeout_s` (FRAUD_KAFKA__FLUSH_TIMEOUT_MS)
    and none was refused, the worker holds the batch (nothing committed) and waits on,
    checking every second whether it was asked to stop, until the broker answers; then it
    commits and resumes. A commit that finds the broker unreachable is kept and tried
    again (commit_offsets), and counts as the same wait once it has failed for
    `timeout_s`. While a wait lasts, `waiting` is true: /readyz answers 503 and
    fraud_broker_waiting is 1; fraud_broker_waits_total and
    fraud_broker_wait_seconds_total count the waits. Only unavailability waits: a send the
    broker refused (a record too large, a topic it will not write) fails its future, and
    that stops the worker as before.
    """

    POLL_S = 1.0  # how often a wait for sends checks for a stop request

    def __init__(
        self,
        timeout_s: float,
        metrics=None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.timeout_s, self.metrics, self.stopping = timeout_s, metrics, stopping
        self.since: float | None = None  # monotonic: the broker unanswering since then
        self.last_seen: float = float("-inf")  # monotonic: the last time it did not answer
        self.waiting = False  # reported: unanswering for timeout_s or longer

    def describe(self) -> str:
        if not self.waiting or self.since is None:
            return "ready"
        return f"waiting on the broker for {time.monotonic() - self.since:.0f} s"

    def unanswered(self, since: float, what: str) -> None:
        """The broker did not answer `what` (sends, a commit), tried since `since`
        (monotonic): the wait is reported once that has lasted timeout_s."""
        now = time.monotonic()
        self.last_seen = now
        if self.since is None:
            self.since = since
        if not self.waiting and now - self.since >= self.timeout_s:
            self.waiting = True
            log.warning(
                "the broker has not answered %s for %.0f s: waiting for it, holding the "
                "batch (nothing committed)",
                what,
                now - self.since,
            )
            if self.metrics is not None:
                self.metrics.broker_waiting.set(1)
                self.metrics.broker_waits.inc()

    def answered(self) -> None:
        """The broker answered (the sends acknowledged, a commit made): a wait ends."""
        if self.waiting and self.since is not None:
            seconds = time.monotonic() - self.since
            log.warning("the broker answered after %.1f s: resuming", seconds)
            if self.metrics is not None:
                self.metrics.broker_waiting.set(0)
                self.metrics.broker_wait_seconds.inc(seconds)
        self.since, self.waiting = None, False

    def wait_for_sends(
        self, producer: KafkaProducer, futures: list, started: float, what: str
    ) -> None:
        """Wait while some of `futures` are unanswered and none failed; the first flush
        (timeout_s from `started`) is over."""
        while any(not f.is_done for f in futures) and not any(f.failed() for f in futures):
            self.unanswered(started, f"{sum(not f.is_done for f in futures)} sends of {what}")
            if self.stopping():
                raise PublishError(
                    f"stopped while waiting on the broker: {what} not committed; its records "
                    "are replayed by the partitions' next owner"
                )
            _flush(producer, self.POLL_S)
        if not any(f.failed() for f in futures):
            self.answered()


def _flush(producer: KafkaProducer, timeout_s: float) -> None:
    """producer.flush(), whose errors say nothing about a send (each future does)."""
    try:
        producer.flush(timeout=timeout_s)
    except KafkaError as e:
        log.debug("producer flush: %r; waiting on each send", e)


def await_sends(
    producer: KafkaProducer,
    futures: Iterable,
    what: str,
    timeout_s: float = FLUSH_TIMEOUT_S,
    broker_wait: BrokerWait | None = None,
) -> None:
    """Wait until the broker acknowledged each of `futures` (sends of `producer`); raise
    PublishError naming `what` when any was refused, or was not acknowledged within
    `timeout_s` and there is no `broker_wait` to wait on (the scoring worker's: it waits
    for a broker that is away, BrokerWait).

    kafka-python 3.0.12's flush() gives up with UnknownError("Future not done") when a
    batch it waits on is split and sent again (the broker refused it as too large), and
    flush() never reports a refused send at all; each send's own future follows the
    split and tells how it ended.
    """
    futures = list(futures)
    started = time.monotonic()
    if broker_wait is not None:
        timeout_s = broker_wait.timeout_s
    _flush(producer, timeout_s)
    if broker_wait is not None:
        broker_wait.wait_for_sends(producer, futures, started, what)
    deadline = started + timeout_s
    failures = []
    for f in futures:
        try:
            f.get(timeout=max(deadline - time.monotonic(), 0.001))
        except KafkaError as e:  # refused, or no acknowledgement in time
            failures.append(e)
    if failures:
        raise PublishError(
            f"{len(failures)} records of {what} were not acknowledged by the broker "
            f"(first: {failures[0]!r}): not committing"
        )


def make_producer(kafka: KafkaSettings, **overrides) -> KafkaProducer:
    """An idempotent producer that waits for all in-sync replicas (acks=all)."""
    config = dict(
        **connection_config(kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=kafka.request_timeout_ms,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        max_request_size=max(1_048_576, kafka.max_message_bytes * 4),
    )
    config.update(overrides)
    return _connect(KafkaProducer, kafka, config)


def make_transactional_clients(
    kafka: KafkaSettings, **producer_overrides
) -> tuple[KafkaConsumer, KafkaProducer]:
    """Exactly-once mode: a consumer that reads only committed records, and a producer
    whose transactions hold a batch's outputs and its input offsets."""
    consumer = make_consumer(kafka, isolation_level="read_committed")
    return consumer, make_transactional_producer(kafka, **producer_overrides)


def make_transactional_producer(kafka: KafkaSettings, **overrides) -> KafkaProducer:
    """The exactly-once producer: this worker's transactional id (the same for every
    producer a process makes, so a new one fences the one it replaces)."""
    return make_producer(
        kafka,
        transactional_id=kafka.transactional_id or f"{kafka.group_id}-{default_worker_id()}",
        transaction_timeout_ms=kafka.transaction_timeout_ms,
        **overrides,
    )


def ensure_topics(
    kafka: KafkaSettings,
    topics: list[str],
    partitions: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create any of `topics` that do not exist yet (idempotent), with topic `configs`."""
    admin = _connect(
        KafkaAdminClient, kafka, dict(**connection_config(kafka), request_timeout_ms=10_000)
    )
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


def cluster_id(kafka: KafkaSettings) -> str:
    """The Kafka cluster's id (what tells one cluster from another at the same address)."""
    admin = _connect(
        KafkaAdminClient, kafka, dict(**connection_config(kafka), request_timeout_ms=10_000)
    )
    try:
        return str(admin.describe_cluster()["cluster_id"])
    except KafkaError as e:
        raise BrokerUnavailableError(f"could not describe the Kafka cluster: {e}") from None
    finally:
        admin.close()


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


def default_worker_id() -> str:
    """This process as a dead letter names it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def send_dead_letter(
    producer: KafkaProducer,
    topic: str,
    record,
    reason: str,
    detail: str,
    *,
    error_class: str = "SchemaError",
    worker_id: str | None = None,
):
    """The record's original bytes and key, with the reason and its provenance in headers;
    logged with where it came from.

    Headers: dead_letter_reason (a fixed code), dead_letter_detail (at most 1000 bytes),
    dead_letter_error (the exception class), dead_letter_worker (who refused it: the
    process's host:pid unless `worker_id` is given), dead_letter_time (UTC, ISO 8601),
    source_topic, source_partition, source_offset and source_timestamp (the record's
    own timestamp in ms, -1 if it has none).
    """
    log.warning(
        "dead letter %s[%d]@%d: %s: %s",
        record.topic,
        record.partition,
        record.offset,
        reason,
        detail,
    )
    # Cut to 1000 bytes without splitting a character, so the header stays valid UTF-8.
    detail_bytes = detail.encode("utf-8", "replace")[:1000].decode("utf-8", "ignore").encode()
    timestamp = getattr(record, "timestamp", None)
    timestamp = -1 if timestamp is None else timestamp
    headers = [
        ("dead_letter_reason", reason.encode()),
        ("dead_letter_detail", detail_bytes),
        ("dead_letter_error", error_class.encode()),
        ("dead_letter_worker", (worker_id or default_worker_id()).encode("utf-8", "replace")),
        ("dead_letter_time", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        ("source_timestamp", str(timestamp).encode()),
    ]
    return producer.send(topic, record.value or b"", key=record.key, headers=headers)


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


def partition_count(kafka: KafkaSettings, topic: str) -> int:
    consumer = make_consumer(kafka, group_id=None)
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close(autocommit=False)


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
