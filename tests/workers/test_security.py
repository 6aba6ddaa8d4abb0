"""Issue 8, security, on real brokers and real processes.

- Kafka over SASL_SSL with a SCRAM login: a broker of this module's own (not the session's)
  listens with TLS and SCRAM-SHA-512; a `fraud worker` with the right credentials scores
  through it, and wrong credentials or an untrusted certificate fail at once with one
  clear error, never a silent plaintext connection.
- Privacy: a unique canary string in the text of messages, good and malformed, sent
  through a `fraud worker` logging at DEBUG, appears in no log line, not on the metrics
  page, and in no record the worker writes other than the dead letters (which keep the
  original bytes on purpose).
- The worker's metrics and health endpoint and `fraud serve` listen on 127.0.0.1 only
  unless told otherwise.
"""

import json
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fraud.config import KafkaSettings, ServeSettings, Settings, to_env
from fraud.errors import BrokerRefusedError, BrokerUnavailableError
from fraud.schemas import Decision
from tests.workers.kafka_helpers import (
    own_topics,
    read_topic,
    send_raw,
    wait_for_commit,
    worker_metric,
)
from workers.broker import LocalBroker
from workers.cli.main import main
from workers.kafka import ensure_topics, make_consumer, make_producer
from workers.processes import free_port, start_fraud_process, stop_process

pytestmark = [pytest.mark.integration]

SCAM = "URGENT: your Northbank account is locked, verify your details at nb-login.co now"
LEGIT = "running 10 min late, order me a flat white"
USER, PASSWORD, WRONG = "fraud-worker", f"pw-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"


# -- Kafka security --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scram_broker() -> Iterator[LocalBroker]:
    with LocalBroker(scram_user=(USER, PASSWORD)) as broker:
        yield broker


def _sasl_ssl(broker: LocalBroker, **changes) -> KafkaSettings:
    security = dict(
        security_protocol="SASL_SSL",
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_cafile=broker.ca_file,
    )
    return own_topics(
        broker.sasl_ssl_bootstrap_servers, publish_scores=True, **{**security, **changes}
    )


@pytest.mark.model
def test_a_worker_scores_through_a_sasl_ssl_scram_listener(scram_broker, seed_index_dir, tmp_path):
    kafka = _sasl_ssl(scram_broker)
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": seed_index_dir, "metrics_port": 0}
    )
    ensure_topics(kafka, [kafka.input_topic])
    messages = [{"id": "s-1", "text": SCAM}, {"id": "s-2", "text": LEGIT}]
    send_raw(kafka, kafka.input_topic, [json.dumps(m).encode() for m in messages])
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_fraud_process("worker", settings, log)
        try:
            scores = read_topic(kafka, kafka.scores_topic, 2, timeout_s=120)
        finally:
            stop_process(worker)
    log_text = log_path.read_text()
    assert sorted(r.key for r in scores) == [b"s-1", b"s-2"], log_text[-3000:]
    alerts = read_topic(kafka, kafka.alert_topic, 1, timeout_s=10)
    assert [Decision.from_bytes(r.value).message_id for r in alerts] == ["s-1"]
    assert worker.returncode == 0, log_text[-3000:]
    assert PASSWORD not in log_text  # the settings are logged, the password masked
    assert '"sasl_password":"**********"' in log_text


def test_a_wrong_password_fails_at_once_with_one_clear_error(scram_broker, caplog):
    kafka = _sasl_ssl(scram_broker, sasl_password=WRONG, bootstrap_timeout_ms=3000)
    for make in (make_producer, make_consumer, lambda k: ensure_topics(k, [k.input_topic])):
        started = time.monotonic()
        with pytest.raises(BrokerRefusedError) as refused:
            make(kafka)
        assert time.monotonic() - started < 10
        message = str(refused.value)
        assert f"SASL_SSL login as '{USER}' (SCRAM-SHA-512) did not succeed" in message
        assert scram_broker.sasl_ssl_bootstrap_servers in message
        assert WRONG not in message
    assert WRONG not in caplog.text
    # Nothing was written: the topic the clients were given was never even created.
    good = _sasl_ssl(scram_broker)
    consumer = make_consumer(good, group_id=None)
    try:
        assert kafka.input_topic not in consumer.topics()
    finally:
        consumer.close(autocommit=False)


def test_a_wrong_password_stops_a_command_with_one_line(
    scram_broker, monkeypatch, capsys, tmp_path
):
    messages = tmp_path / "m.jsonl"
    messages.write_text(json.dumps({"id": "1", "text": LEGIT}) + "\n")
    for key, value in to_env(
        Settings(kafka=_sasl_ssl(scram_broker, sasl_password=WRONG, bootstrap_timeout_ms=3000))
    ).items():
        monkeypatch.setenv(key, value)
    assert main(["produce", str(messages)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fraud: error: the Kafka broker at "), err
    assert "login as 'fraud-worker' (SCRAM-SHA-512) did not succeed" in err[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"ssl_cafile": None},  # the system's CAs: they never signed the throwaway CA
        {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None},  # no TLS to a TLS listener
    ],
    ids=["untrusted-certificate", "no-tls"],
)
def test_a_client_that_would_not_verify_or_encrypt_gets_nothing(scram_broker, changes):
    kafka = _sasl_ssl(scram_broker, bootstrap_timeout_ms=3000, **changes)
    with pytest.raises(BrokerRefusedError, match="accepts connections, but this client's"):
        make_producer(kafka)


def test_a_silent_listener_is_told_apart_from_a_refusal_and_from_no_broker():
    """Plaintext settings and a port that accepts but never answers (a TLS listener, a
    broker still starting): retriable BrokerUnavailableError saying so, not a refusal."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        kafka = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{silent.getsockname()[1]}", bootstrap_timeout_ms=500
        )
        with pytest.raises(BrokerUnavailableError, match="accepts connections but did not") as e:
            make_producer(kafka)
        assert not isinstance(e.value, BrokerRefusedError) and e.value.retriable
    with pytest.raises(BrokerUnavailableError, match="no Kafka broker answered"):
        make_producer(kafka)  # nothing listens there now


# -- privacy -----------------------------------------------------------------------------------


@dataclass
class CanaryRun:
    canary: str
    log: str
    metrics_page: str
    alerts: list[Decision]
    written: dict[str, list[bytes]]  # what the worker wrote, per topic (dead letters aside)
    dead_letters: int
    listening: set[tuple[str, int]]  # the worker's listening sockets while it ran


@pytest.fixture(scope="module")
def canary_run(kafka_bootstrap, seed_index_dir, tmp_path_factory) -> CanaryRun:
    """A `fraud worker` at DEBUG (-v), default metrics address, fed messages that carry a
    unique canary in their text: two good ones (one alerts) and five malformed ones."""
    canary = f"canary{uuid.uuid4().hex}"
    kafka = own_topics(kafka_bootstrap, publish_scores=True)
    port = free_port()
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": seed_index_dir, "metrics_port": port}
    )
    good = [
        {"id": "c-1", "text": f"{SCAM} {canary}", "recipient": "r-1"},
        {"id": "c-2", "text": f"{LEGIT} {canary}", "recipient": "r-1"},
    ]
    bad = [
        f'{{"id": "c-3", "text": "{canary}'.encode(),  # invalid JSON
        f'{{"id": "c-4", "text": "{canary}"}}'.encode() + b"\xff",  # invalid UTF-8
        json.dumps({"text": canary}).encode(),  # no id
        json.dumps({"id": "c-6", "text": canary * 2000}).encode(),  # too large
        json.dumps({"id": ["c-7"], "text": canary}).encode(),  # id of the wrong type
    ]
    ensure_topics(kafka, [kafka.input_topic])
    send_raw(kafka, kafka.input_topic, [json.dumps(m).encode() for m in good] + bad)
    log_path = tmp_path_factory.mktemp("canary") / "worker.log"
    with log_path.open("w") as log:
        worker = start_fraud_process(("worker", "-v"), settings, log)
        try:
            scores = read_topic(kafka, kafka.scores_topic, len(good), timeout_s=180)
            dead = read_topic(kafka, kafka.dead_letter_topic, len(bad), timeout_s=30)
            assert (len(scores), len(dead)) == (len(good), len(bad)), log_path.read_text()[-3000:]
            # The worker counts a batch once its offsets are committed, just after the
            # broker acknowledged its records: wait for that rather than race it.
            wait_for_commit(kafka, kafka.input_topic, len(good) + len(bad))
            deadline = time.monotonic() + 30
            while worker_metric(port, "fraud_messages_scored_total") != len(good):
                assert time.monotonic() < deadline, "the scored messages were not counted"
                time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                page = r.read().decode()
            listening = listening_addresses(worker.pid)
        finally:
            stop_process(worker)
    alerts = read_topic(kafka, kafka.alert_topic, 1, timeout_s=10)
    history = read_topic(kafka, kafka.history_topic, 1, timeout_s=10)
    assert worker.returncode == 0, log_path.read_text()[-3000:]
    return CanaryRun(
        canary=canary,
        log=log_path.read_text(),
        metrics_page=page,
        alerts=[Decision.from_bytes(r.value) for r in alerts],
        written={
            "scores": [r.value for r in scores],
            "alerts": [r.value for r in alerts],
            "history": [r.value for r in history],
        },
        dead_letters=len(dead),
        listening=listening,
    )


@pytest.mark.model
def test_message_text_appears_in_no_log_line_metric_or_alert(canary_run):
    run = canary_run
    # The run did what it had to: a DEBUG log, every record decided, one alert.
    assert " DEBUG " in run.log and "dead letter" in run.log
    assert [a.message_id for a in run.alerts] == ["c-1"]
    assert run.dead_letters == 5
    assert "fraud_messages_scored_total 2.0" in run.metrics_page
    leaks = [line for line in run.log.splitlines() if run.canary in line]
    assert not leaks, leaks[:3]
    assert run.canary not in run.metrics_page
    for topic, values in run.written.items():
        assert values, topic
        assert not [v for v in values if run.canary.encode() in v], topic


@pytest.mark.model
def test_the_workers_metrics_and_health_endpoint_listens_on_loopback_only(canary_run):
    assert Settings().metrics_host == "127.0.0.1"
    assert canary_run.listening, "the worker listened on nothing"
    assert {host for host, _ in canary_run.listening} == {"127.0.0.1"}


def test_fraud_serve_listens_on_loopback_only(seed_index_dir, tmp_path):
    settings = Settings().model_copy(
        update={"index_dir": seed_index_dir, "serve": ServeSettings(port=0)}
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = start_fraud_process("serve", settings, log)
        try:
            # It binds, logs "serving on", then uvicorn starts listening on that socket.
            deadline = time.monotonic() + 90
            while not (listening := listening_addresses(proc.pid)):
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        finally:
            stop_process(proc)
    assert {host for host, _ in listening} == {"127.0.0.1"}


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP sockets process `pid` listens on, as the kernel has them (Linux /proc):
    the process's socket inodes matched against the LISTEN rows of its tcp and tcp6 tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # The kernel prints the address as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found
