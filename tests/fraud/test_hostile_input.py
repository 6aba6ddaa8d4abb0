"""Hostile and broken records: whatever arrives, parse_message either accepts it or raises
SchemaError (which the worker dead-letters), and an accepted message can be normalized,
keyed and alerted on. Anything else escaping would crash the worker, and the replay after
the crash would read the same record again.

The cost of one record is bounded too: the size limit is checked before decoding, the
normalizer is linear, and the encoder truncates to max_tokens.
"""

import json
import time
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud import schemas
from fraud.config import KafkaSettings
from fraud.errors import SchemaError
from fraud.schemas import (
    DEAD_LETTER_REASONS,
    MAX_JSON_DEPTH,
    Assessment,
    Decision,
    Message,
    parse_message,
)
from fraud.text.normalize import normalize

LIMIT = KafkaSettings().max_message_bytes  # the worker's default limit (64 KiB)
_ASSESSMENT = Assessment(
    score=0.5, is_alert=True, category="x", category_distribution={"x": 0.5}, evidence=[]
)


def _check_usable(message: Message) -> None:
    """What the worker does with an accepted message, short of the model."""
    text = normalize(message.text)
    assert normalize(text) == text
    message.id.encode("utf-8")  # the alert's Kafka key
    alert = Decision.build(
        message,
        _ASSESSMENT,
        threshold=0.5,
        model="m",
        index_version="v",
        scored_at="2026-01-01T00:00:00.000+00:00",
        processing_ms=1.0,
    )
    assert Decision.from_bytes(alert.to_bytes()).message_id == message.id


def _parse(raw: bytes | None, max_bytes: int = LIMIT) -> Message | None:
    """The message, or None when refused with a known reason; anything else fails the test."""
    try:
        message = parse_message(raw, max_bytes)
    except SchemaError as e:
        assert e.reason in DEAD_LETTER_REASONS
        return None
    _check_usable(message)
    return message


# -- fuzzing ----------------------------------------------------------------------------


@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw):
    _parse(raw)


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["id", "text", "sender", "recipient", "metadata"]) | st.text(max_size=8),
        _json_values,
    ),
    st.booleans(),
)
def test_json_objects_with_any_fields_of_any_type(obj, ascii_only):
    _parse(json.dumps(obj, ensure_ascii=ascii_only).encode())


@given(st.text(), st.text(max_size=300), st.dictionaries(st.text(max_size=8), _json_values))
def test_any_id_and_text(text, message_id, extra):
    obj = {**extra, "id": message_id, "text": text}
    message = _parse(json.dumps(obj).encode())
    if message is not None:
        assert message.text == text


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_valid_records_with_bytes_flipped_inserted_or_cut(data):
    raw = bytearray(
        json.dumps({"id": "m1", "text": "Pay the £1.99 fee at parcelgo.com", "n": [1, {}]}).encode()
    )
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del raw[at:]
    _parse(bytes(raw))


# -- named hostile records --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc3\x28",  # a broken two-byte sequence
        b"\xe2\x82",  # cut short
        b"\xc0\xaf",  # an overlong "/"
        b"\xed\xa0\x80",  # a surrogate encoded as UTF-8
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b'{"id": "m1", "text": "caf\xe9"}',  # Latin-1, not UTF-8
    ],
)
def test_invalid_utf8_is_refused(raw):
    with pytest.raises(SchemaError) as err:
        parse_message(raw, LIMIT)
    assert err.value.reason == "invalid_utf8"


@pytest.mark.parametrize(
    "escaped",
    [
        r'{"id": "m1", "text": "pay \ud800 now"}',
        r'{"id": "\udc00", "text": "hello"}',
        r'{"id": "m1", "text": "hi", "meta": {"a": ["\udbff"]}}',
        r'{"id": "m1", "text": "hi", "\ud800": 1}',
    ],
)
def test_a_lone_surrogate_escape_anywhere_is_refused(escaped):
    # Valid JSON, but the string it decodes to cannot be encoded back to UTF-8: the
    # tokenizer and the alert serializer would both raise on it.
    with pytest.raises(SchemaError) as err:
        parse_message(escaped.encode(), LIMIT)
    assert err.value.reason == "invalid_utf8"


def test_a_surrogate_pair_escape_is_an_ordinary_character():
    message = _parse(rb'{"id": "m1", "text": "win \ud83d\ude00 now"}')
    assert message is not None and message.text == "win \U0001f600 now"


def test_a_record_over_the_limit_is_refused_before_it_is_decoded(monkeypatch):
    def no_parsing(*args, **kwargs):
        raise AssertionError("an oversized record reached the JSON parser")

    monkeypatch.setattr(schemas.json, "loads", no_parsing)
    huge = json.dumps({"id": "m1", "text": "win " * LIMIT}).encode()
    with pytest.raises(SchemaError) as err:
        parse_message(huge, LIMIT)
    assert err.value.reason == "too_large"


def test_100k_emoji_are_refused_by_size_and_normalize_quickly():
    text = "\U0001f4b0" * 100_000
    with pytest.raises(SchemaError) as err:
        parse_message(json.dumps({"id": "m1", "text": text}, ensure_ascii=False).encode(), LIMIT)
    assert err.value.reason == "too_large"
    started = time.perf_counter()
    assert normalize(text) == text
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_is_refused_cleanly(depth):
    # 100k nested arrays are past the parser's recursion limit: a RecursionError must
    # not escape. A few hundred are parsed, but an alert carrying them could not be
    # serialized, so the limit is MAX_JSON_DEPTH.
    nested = "[" * depth + "]" * depth
    for doc in (nested, '{"id": "m1", "text": "hi", "meta": ' + nested + "}"):
        with pytest.raises(SchemaError) as err:
            parse_message(doc.encode(), max_bytes=1_000_000)
        assert err.value.reason == "invalid_schema"
        assert str(MAX_JSON_DEPTH) in err.value.detail


def test_nesting_up_to_the_limit_is_accepted_and_alerted_on():
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    message = _parse(('{"id": "m1", "text": "hi", "meta": ' + nested + "}").encode())
    assert message is not None


def test_an_unterminated_deep_document_is_refused():
    with pytest.raises(SchemaError):
        parse_message(b"[" * 60_000, LIMIT)


def test_a_huge_integer_is_refused_not_raised():
    # Python refuses to convert more than 4300 digits with a ValueError.
    raw = b'{"id": "m1", "text": "hi", "n": ' + b"9" * 5000 + b"}"
    with pytest.raises(SchemaError) as err:
        parse_message(raw, LIMIT)
    assert err.value.reason == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "m1", "text": "hi", "n": NaN, "m": -Infinity, "f": 1e999}',
        b'{"id": "m1", "text": "first", "text": "second"}',
        b'{"id": "m1", "text": "hi", "__class__": {}, "model_config": 1, "passthrough": []}',
    ],
)
def test_odd_but_valid_json_is_accepted_and_alerted_on(raw):
    assert _parse(raw) is not None


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("pay\x00 the\x07 fee\x1b[31m now", "pay the fee[31m now"),
        ("click \u202ehere\u202c now", "click here now"),  # bidi override
        ("\u2066verify\u2069 your \u200faccount", "verify your account"),
        ("line one\r\nline two\x0b\x0c", "line one line two"),
        ("\ufeff\u00adwin\u200b a prize", "win a prize"),
    ],
)
def test_control_format_and_bidi_characters_are_accepted_and_removed(text, normalized):
    message = _parse(json.dumps({"id": "m1", "text": text}).encode())
    assert message is not None
    assert normalize(message.text) == normalized


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"just a string"', "invalid_schema"),
        (b"[]", "invalid_schema"),
        (b"null", "invalid_schema"),
        (b'{"id": "m1", "text": ["a", "list"]}', "no_text"),
        (b'{"id": "m1", "text": {"nested": "object"}}', "no_text"),
        (b'{"id": ["m1"], "text": "hi"}', "invalid_schema"),
        (b'{"id": "", "text": "hi"}', "invalid_schema"),
        (b'{"id": "m1", "text": "\\u0000\\u200b "}', None),  # accepted: empty once normalized
        (b"", "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),  # a byte-order mark
    ],
)
def test_wrong_types_and_shapes(raw, reason):
    if reason is None:
        assert _parse(raw) is not None
        return
    with pytest.raises(SchemaError) as err:
        parse_message(raw, LIMIT)
    assert err.value.reason == reason


# -- the normalizer on anything ---------------------------------------------------------


@given(st.text())
def test_normalize_never_fails_is_idempotent_and_bounded(text):
    out = normalize(text)
    assert normalize(out) == out
    assert len(out) <= len(unicodedata.normalize("NFKC", text))


_N = LIMIT


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" * _N, id="one-long-word"),
        pytest.param("a " * (_N // 2), id="spaced-letters"),
        pytest.param("a." * (_N // 2), id="dotted-letters"),
        pytest.param("a b c " * (_N // 6), id="short-runs"),
        pytest.param("p4ypa1 " * (_N // 7), id="leet"),
        pytest.param("a . " * (_N // 4), id="spaced-dots"),
        pytest.param("x[.]" * (_N // 4), id="bracket-dots"),
        pytest.param("hxxp://" * (_N // 7), id="hxxp"),
        pytest.param("\u0430b " * (_N // 3), id="homoglyphs"),
        pytest.param(" " * _N, id="whitespace"),
        pytest.param("\u200b" * _N, id="zero-width"),
        pytest.param("\ufdfa" * (_N // 3), id="nfkc-expands-18x"),
    ],
)
def test_normalize_cost_is_linear_on_hostile_texts(text):
    # Linear work takes well under 0.2 s on 64 KiB; a quadratic scan would take minutes.
    started = time.perf_counter()
    normalize(text)
    assert time.perf_counter() - started < 3


# -- the encoder truncates --------------------------------------------------------------


@pytest.mark.model
def test_the_encoder_truncates_a_message_at_the_size_limit_to_max_tokens(encoder):
    text = ("Your parcel is held. Pay the fee now. " * 2000)[: LIMIT - 100]
    message = _parse(json.dumps({"id": "m1", "text": text}).encode())
    assert message is not None
    assert encoder.token_counts([message.text]).tolist() == [encoder.max_tokens]
    vector = encoder.encode([message.text])
    assert vector.shape == (1, encoder.dim)


# -- analyst verdicts: the feedback processor's records ------------------------------------


def _parse_verdict(raw: bytes | None) -> None:
    from fraud.scoring.verdicts import parse_verdict

    try:
        verdict = parse_verdict(raw)
    except SchemaError as e:
        assert e.reason in DEAD_LETTER_REASONS
        return
    assert verdict.verdict in ("fraud", "legit")


@given(st.binary(max_size=2048))
def test_verdict_arbitrary_bytes(raw):
    _parse_verdict(raw)


@given(
    st.dictionaries(
        st.sampled_from(["message_id", "verdict", "category", "text", "analyst"])
        | st.text(max_size=8),
        _json_values,
    )
)
def test_verdict_json_objects_with_any_fields_of_any_type(obj):
    _parse_verdict(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"[" * 100_000 + b"]" * 100_000, "invalid_schema"),
        (b'{"message_id": "m", "verdict": "fraud", "n": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b'{"message_id": "\\ud800", "verdict": "fraud"}', "invalid_utf8"),
        (b"\xff\xfe", "invalid_utf8"),
        (
            b'{"message_id": "m", "verdict": "fraud", "text": "' + b"a" * 300_000 + b'"}',
            "too_large",
        ),
        (None, "invalid_json"),
    ],
    ids=["deep", "huge-int", "lone-surrogate", "not-utf8", "too-large", "tombstone"],
)
def test_hostile_verdicts_are_refused_with_a_reason(raw, reason):
    from fraud.scoring.verdicts import parse_verdict

    with pytest.raises(SchemaError) as e:
        parse_verdict(raw)
    assert e.value.reason == reason
