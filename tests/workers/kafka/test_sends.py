"""send_dead_letter (workers/kafka/sends.py) without a broker: a producer that records what
it was asked to send."""

import logging
import os
import socket
from datetime import UTC, datetime, timedelta

from tests.fakes import FakeFuture, RecordingProducer, consumer_record
from workers.kafka import default_worker_id, send_dead_letter


def _record(value: bytes | None = b"\xff not json", timestamp: int | None = 1_767_225_600_000):
    return consumer_record(value, partition=3, offset=41, key=b"k1", timestamp=timestamp)


def test_a_dead_letter_keeps_the_original_bytes_and_key_and_says_where_it_came_from(caplog):
    producer = RecordingProducer()
    before = datetime.now(UTC)
    with caplog.at_level(logging.WARNING):
        future = send_dead_letter(
            producer,
            "messages-dead-letter",
            _record(),
            "invalid_utf8",
            "invalid start byte at byte 0",
            worker_id="scorer-7",
        )
    assert isinstance(future, FakeFuture)
    (sent,) = producer.sent
    assert (sent["topic"], sent["value"], sent["key"]) == (
        "messages-dead-letter",
        b"\xff not json",
        b"k1",
    )
    headers = dict(sent["headers"])
    assert len(headers) == len(sent["headers"])  # no header twice
    assert headers["dead_letter_reason"] == b"invalid_utf8"
    assert headers["dead_letter_detail"] == b"invalid start byte at byte 0"
    assert headers["dead_letter_error"] == b"SchemaError"
    assert headers["dead_letter_worker"] == b"scorer-7"
    assert headers["source_topic"] == b"messages"
    assert headers["source_partition"] == b"3"
    assert headers["source_offset"] == b"41"
    assert headers["source_timestamp"] == b"1767225600000"
    at = datetime.fromisoformat(headers["dead_letter_time"].decode())
    assert at.tzinfo is not None and before - timedelta(seconds=1) <= at <= datetime.now(UTC)
    assert "messages[3]@41: invalid_utf8" in caplog.text


def test_without_a_worker_id_the_process_names_itself():
    producer = RecordingProducer()
    send_dead_letter(producer, "dlq", _record(), "too_large", "70000 bytes")
    headers = dict(producer.sent[0]["headers"])
    assert headers["dead_letter_worker"] == default_worker_id().encode()
    assert default_worker_id() == f"{socket.gethostname()}:{os.getpid()}"


def test_the_error_class_can_be_named_by_the_caller():
    producer = RecordingProducer()
    send_dead_letter(producer, "dlq", _record(), "unknown_message", "?", error_class="DataError")
    assert dict(producer.sent[0]["headers"])["dead_letter_error"] == b"DataError"


def test_a_tombstone_is_dead_lettered_as_empty_bytes_and_a_missing_timestamp_as_minus_one():
    producer = RecordingProducer()
    send_dead_letter(producer, "dlq", _record(value=None, timestamp=None), "no_text", "tombstone")
    assert producer.sent[0]["value"] == b""
    assert dict(producer.sent[0]["headers"])["source_timestamp"] == b"-1"


def test_a_long_detail_is_cut_to_1000_bytes_of_valid_utf8():
    producer = RecordingProducer()
    detail = "é" * 999 + "\ud800"  # 2-byte characters (cut in the middle of one), a surrogate
    send_dead_letter(producer, "dlq", _record(), "invalid_schema", detail)
    cut = dict(producer.sent[0]["headers"])["dead_letter_detail"]
    assert len(cut) <= 1000
    assert cut.decode("utf-8") == "é" * 500
