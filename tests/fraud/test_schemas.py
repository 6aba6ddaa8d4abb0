import json
from typing import get_args

import pytest

from fraud.errors import SchemaError
from fraud.schemas import (
    DEAD_LETTER_REASONS,
    DECODE_REASONS,
    SCHEMA_VERSION,
    SCORING_ERROR,
    Alert,
    Assessment,
    DeadLetterReason,
    Decision,
    DecodeReason,
    Evidence,
    parse_message,
)


def test_a_good_message_keeps_its_other_fields():
    raw = json.dumps(
        {"id": "m1", "text": "hi", "sender": "+44", "metadata": {"channel": "sms"}}
    ).encode()
    message = parse_message(raw, max_bytes=1000)
    assert (message.id, message.text) == ("m1", "hi")
    assert message.passthrough() == {"sender": "+44", "metadata": {"channel": "sms"}}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 101, "too_large"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"id": "m1", "text": ', "invalid_json"),
        (b'["a list"]', "invalid_schema"),
        (b'{"text": "no id"}', "invalid_schema"),
        (b'{"id": 7, "text": "id not a string"}', "invalid_schema"),
        (b'{"id": "m1"}', "no_text"),
        (b'{"id": "m1", "text": "   "}', "no_text"),
        (b'{"id": "m1", "text": 5}', "no_text"),
        (None, "no_text"),
    ],
)
def test_unusable_records_name_their_reason(raw, reason):
    with pytest.raises(SchemaError) as err:
        parse_message(raw, max_bytes=100)
    assert err.value.reason == reason
    assert reason in DECODE_REASONS and reason in DEAD_LETTER_REASONS


def test_the_dead_letter_reasons_are_one_literal_listed_once():
    assert DEAD_LETTER_REASONS == get_args(DeadLetterReason)
    assert DECODE_REASONS == get_args(DecodeReason)
    assert DEAD_LETTER_REASONS == (*DECODE_REASONS, SCORING_ERROR, "unknown_message")


def _alert(message_id: str = "m1", index_version: str = "v1") -> Decision:
    message = parse_message(
        json.dumps({"id": message_id, "text": "pay the fee", "recipient": "r"}).encode(), 1000
    )
    assessment = Assessment(
        score=0.9,
        is_alert=True,
        category="delivery",
        category_distribution={"delivery": 0.9},
        evidence=[Evidence(reference_id=3, category="delivery", similarity=0.8, weight=0.7)],
    )
    return Decision.build(
        message,
        assessment,
        threshold=0.5,
        model="m",
        index_version=index_version,
        scored_at="2026-01-01T00:00:00Z",
        processing_ms=12.3456,
    )


def test_alert_round_trips_through_bytes_with_every_field():
    alert = _alert()
    back = Decision.from_bytes(alert.to_bytes())
    assert back == alert
    assert Alert is Decision  # the old name, for code written before the rename
    body = json.loads(alert.to_bytes())
    for field in (
        "alert_id",
        "message_id",
        "score",
        "category",
        "category_distribution",
        "evidence",
        "model",
        "index_version",
        "scored_at",
        "processing_ms",
        "passthrough",
        "schema_version",
    ):
        assert field in body
    assert body["schema_version"] == SCHEMA_VERSION == 2
    assert body["passthrough"] == {"recipient": "r"}
    assert "text" not in body  # the message text is not copied into alerts
    assert body["evidence"][0] == {
        "source": "bank",
        "reference_id": 3,
        "message_id": None,
        "category": "delivery",
        "similarity": 0.8,
        "weight": 0.7,
    }


def test_alert_id_is_stable_across_replays_and_differs_per_message():
    assert _alert().alert_id == _alert().alert_id
    assert _alert("m2").alert_id != _alert().alert_id
    assert _alert(index_version="v2").alert_id != _alert().alert_id
