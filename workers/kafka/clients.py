"""Kafka client construction from KafkaSettings: the one place client options are chosen.

What is done with the clients lives beside this module: sends.py (acknowledgements, dead
letters), offsets.py (commits, subscriptions, reading a topic back), topics.py (creating
the pipeline's topics).
"""

import os
import socket

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from fraud.config import KafkaSettings
from fraud.errors import BrokerRefusedError, BrokerUnavailableError
from workers.kafka.compat import GroupConsumer

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
        fetch_min_bytes=kafka.fetch_min_bytes,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        fetch_max_bytes=max(52_428_800, kafka.max_message_bytes * 4),
        max_partition_fetch_bytes=max(1_048_576, kafka.max_message_bytes * 2),
    )
    config.update(overrides)
    return _connect(GroupConsumer, kafka, config)


# The scoring worker's producers never expire a send (kafka-python's default gives up after
# 120 s): while the broker is away their sends wait in the producer, and the worker waits
# for them (BrokerWait) instead of stopping. 2**31 - 1 ms: about 25 days.
NEVER_EXPIRE_MS = 2**31 - 1


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


def make_transactional_producer(kafka: KafkaSettings, **overrides) -> KafkaProducer:
    """The exactly-once producer: this worker's transactional id (the same for every
    producer a process makes, so a new one fences the one it replaces)."""
    return make_producer(
        kafka,
        transactional_id=kafka.transactional_id or f"{kafka.group_id}-{default_worker_id()}",
        transaction_timeout_ms=kafka.transaction_timeout_ms,
        **overrides,
    )


def make_admin(kafka: KafkaSettings) -> KafkaAdminClient:
    """An admin client (topics, the cluster's id); the caller closes it."""
    return _connect(
        KafkaAdminClient, kafka, dict(**connection_config(kafka), request_timeout_ms=10_000)
    )


def cluster_id(kafka: KafkaSettings) -> str:
    """The Kafka cluster's id (what tells one cluster from another at the same address)."""
    admin = make_admin(kafka)
    try:
        return str(admin.describe_cluster()["cluster_id"])
    except KafkaError as e:
        raise BrokerUnavailableError(f"could not describe the Kafka cluster: {e}") from None
    finally:
        admin.close()


def default_worker_id() -> str:
    """This process as a dead letter and a transactional id name it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"
