"""The console's database is a view of the topics (workers/console/reader.py), on the real
broker: a verdict sent by `fraud feedback`, an alert, its message, a bank change and a
campaign are read in; a record it cannot read is skipped; a lost database is rebuilt the
same from the topics; a text older than the retention is not kept."""

import json
import time

import numpy as np
import pytest

from fraud.config import ConsoleSettings
from fraud.index import Reference
from fraud.index.changelog import change_key, encode_upsert
from tests.fakes import decision
from tests.workers.kafka_helpers import send_raw
from workers.console import Store, TopicReader
from workers.kafka import make_producer

pytestmark = [pytest.mark.integration]

TEXT = "Your parcel is held: pay the 1.99 fee at parcel-fee.example"


def _fill_topics(kafka) -> None:
    producer = make_producer(kafka)
    try:
        message = {"id": "m-1", "text": TEXT, "sender": "+1 555 0100", "recipient": "+1 555 0199"}
        old = {"id": "m-old", "text": "an old text", "recipient": "+1 555 0199"}
        week_ago_ms = int((time.time() - 7 * 86400) * 1000)
        sends = [
            producer.send(kafka.input_topic, json.dumps(message).encode(), key=b"m-1"),
            producer.send(
                kafka.input_topic, json.dumps(old).encode(), key=b"m-old", timestamp_ms=week_ago_ms
            ),
            producer.send(
                kafka.alert_topic, decision("m-1", True, "parcel").to_bytes(), key=b"m-1"
            ),
            producer.send(kafka.alert_topic, b"not a decision", key=b"m-2"),
            producer.send(
                kafka.bank_topic,
                encode_upsert(
                    Reference(7, "a parcel scam", "fraud", "parcel", "seed", "bo", "seen"),
                    np.ones(4, dtype=np.float32),
                    "fake-encoder",
                ),
                key=change_key(7),
            ),
            producer.send(
                kafka.campaign_topic,
                json.dumps(
                    {
                        "campaign_id": "c-1",
                        "category": "parcel",
                        "size": 1,
                        "recipients": 1,
                        "members": ["m-1"],
                    }
                ).encode(),
                key=b"c-1",
            ),
        ]
        producer.flush(30)
        for future in sends:
            future.get(timeout=0)
    finally:
        producer.close(timeout=10)


def _read_all(kafka, console, path) -> Store:
    store = Store(path)
    reader = TopicReader(kafka, console, store).start()
    try:
        assert reader.caught_up.wait(60), "the reader did not reach the topics' ends"
        # the verdict is read back: the alert's status follows it
        deadline = time.monotonic() + 30
        while store.alert("m-1")["status"] != "confirmed":
            assert time.monotonic() < deadline, "the verdict was not read"
            time.sleep(0.1)
    finally:
        reader.close()
    assert reader.error is None
    return store


def _view(store: Store) -> dict:
    return {
        table: store.query(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 (fixed names)
        for table in ("messages", "alerts", "verdicts", "bank", "bank_history", "campaigns")
    }


def test_the_database_is_read_from_the_topics_and_rebuilt_the_same(
    kafka_settings, tmp_path, monkeypatch
):
    from workers.cli.main import main

    kafka = kafka_settings
    console = ConsoleSettings(text_retention_s=86400)
    _fill_topics(kafka)
    monkeypatch.setenv("FRAUD_KAFKA__FEEDBACK_TOPIC", kafka.feedback_topic)
    sent = main(
        [
            "feedback",
            "m-1",
            "fraud",
            "--category",
            "parcel",
            "--analyst",
            "ana",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
        ]
    )
    assert sent == 0
    send_raw(kafka, kafka.feedback_topic, [b"{not json"])  # skipped, never stops it

    first = _read_all(kafka, console, tmp_path / "first.sqlite3")
    alert = first.alert("m-1")
    assert (alert["text"], alert["sender"], alert["category"]) == (TEXT, "+1 555 0100", "parcel")
    assert first.message("m-old") is None  # older than the retention
    assert [(v["verdict"], v["analyst"]) for v in first.verdicts("m-1")] == [("fraud", "ana")]
    assert first.references([7])[7]["changed_by"] == "bo"
    assert first.campaign_of("m-1")["campaign_id"] == "c-1"
    assert first.alert("m-2") is None  # the record that is not a decision

    rebuilt = _read_all(kafka, console, tmp_path / "rebuilt.sqlite3")  # the first one lost
    assert _view(rebuilt) == _view(first)
