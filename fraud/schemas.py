"""Wire formats: the incoming message, the model's assessment, and the decision record.

Incoming records are JSON objects `{"id": str, "text": str, ...}`; every other field
(sender, recipient, timestamp, metadata, ...) is passed through to the decision untouched.

Names (STYLE.md): an `Assessment` is the model's answer for one message (score, category,
evidence); a `Decision` is that answer as published for every message, with the threshold,
model and index version it was made with; an alert is a decision over the threshold. A
verdict is an analyst's (fraud/scoring/verdicts.py, `AnalystVerdict`), never the model's.
"""

import json
import re
import uuid
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraud.errors import SchemaError

SCHEMA_VERSION = 2  # 2: evidence source/message_id, retroactive, campaign_id
# Why a record could not be decoded: the reasons parse_message raises.
DecodeReason = Literal["too_large", "invalid_utf8", "invalid_json", "invalid_schema", "no_text"]
# Dead-letter reasons: a small fixed set, used as a header value and a metric label. Beyond
# decoding: scoring_error, the record decoded but encoding or scoring it raised (isolated
# from its batch, fraud/scoring/isolation.py; a verdict the feedback processor failed on, too);
# unknown_message, a verdict on a message the feedback processor never saw.
DeadLetterReason = Literal[DecodeReason, "scoring_error", "unknown_message"]
DECODE_REASONS: tuple[DecodeReason, ...] = get_args(DecodeReason)
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)
SCORING_ERROR: DeadLetterReason = "scoring_error"
_ALERT_NAMESPACE = uuid.UUID("5d1e8f0a-6c1b-4e57-9a34-2f0f6c9b7e11")
# Arrays and objects nested deeper than this are refused: no message needs it, and the
# alert that carries the passthrough fields could not be serialized past 255 levels.
MAX_JSON_DEPTH = 32
# A JSON escape of a UTF-16 surrogate: valid JSON, but alone it decodes to a string that
# is not Unicode text (it cannot be encoded to UTF-8, and the tokenizer refuses it).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=256)
    text: str

    def passthrough(self) -> dict[str, Any]:
        """Every field other than id and text, as received."""
        return dict(self.model_extra or {})


def parse_message(raw: bytes | None, max_bytes: int) -> Message:
    """Decode one Kafka record value, or raise SchemaError with one of DECODE_REASONS.

    Nothing else escapes, whatever the bytes: the worker dead-letters a SchemaError and
    would crash (then replay the same record) on anything else. The size is checked
    before any decoding, so the work per record is bounded by max_bytes.
    """
    if raw is None:
        raise SchemaError("no_text", "record has no value (a tombstone)")
    obj = decode_json_object(raw, max_bytes)
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SchemaError("no_text", "field 'text' is missing, empty or not a string")
    try:
        return Message.model_validate(obj)
    except ValidationError as e:
        raise invalid_schema(e, "message") from None


def invalid_schema(e: ValidationError, what: str) -> SchemaError:
    """A record that decoded but does not fit its model: the first problem, located."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    return SchemaError("invalid_schema", f"{where}: {first['msg']}")


def decode_json_object(raw: bytes, max_bytes: int) -> dict:
    """A record's value as a JSON object, or SchemaError (too_large, invalid_utf8,
    invalid_json, invalid_schema), whatever the bytes: size checked before decoding,
    nesting depth and lone surrogates refused. Messages and analyst verdicts alike."""
    if len(raw) > max_bytes:
        raise SchemaError("too_large", f"{len(raw)} bytes, the limit is {max_bytes}")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SchemaError("invalid_utf8", f"{e.reason} at byte {e.start}") from None
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as e:
        raise SchemaError("invalid_json", f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise SchemaError("invalid_schema", _too_deep()) from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise SchemaError("invalid_json", str(e)[:200]) from None
    _check_nesting_and_strings(obj, decoded)
    if not isinstance(obj, dict):
        raise SchemaError("invalid_schema", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _too_deep() -> str:
    return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


def _check_nesting_and_strings(obj: Any, decoded: str) -> None:
    """check_json_value, only when the raw text could hold what it refuses (enough
    brackets, a surrogate escape): most records skip the walk."""
    deep = decoded.count("[") + decoded.count("{") > MAX_JSON_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(decoded) is not None
    if deep or surrogates:
        check_json_value(obj, surrogates=surrogates)


def check_json_value(obj: Any, surrogates: bool = True) -> None:
    """Refuse (SchemaError) a decoded JSON value nested deeper than MAX_JSON_DEPTH, or with
    a lone surrogate in any key or string (unless `surrogates` is False). Walked without
    recursion. The worker's records and the HTTP service's requests pass the same check."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if surrogates and _SURROGATE.search(value):
                raise SchemaError(
                    "invalid_utf8", "a \\u escape of a lone UTF-16 surrogate is not text"
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise SchemaError("invalid_schema", _too_deep())
        if isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            value = value.values()
        stack.extend((v, depth + 1) for v in value)


class Evidence(BaseModel):
    """One fraud key the message attended to: the first thing an analyst reads.

    source "bank": a reference of the reference bank (reference_id). source "history": an
    earlier message to the same recipient that scored as suspicious (message_id).
    """

    model_config = ConfigDict(frozen=True)

    source: Literal["bank", "history"] = "bank"
    reference_id: int | None = None
    message_id: str | None = None
    category: str | None
    similarity: float
    weight: float


class Assessment(BaseModel):
    """The model's answer for one message (Detector.score): what a Decision publishes.

    Not called a verdict: a verdict is an analyst's (fraud/scoring/verdicts.py). Its JSON
    is what `fraud score --json` prints.
    """

    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=0, le=1)
    is_alert: bool
    category: str | None  # the category with the most attention, None without fraud mass
    category_distribution: dict[str, float]
    evidence: list[Evidence]


class Decision(BaseModel):
    """The decision on one message as published: to the alert topic when is_alert (an
    alert), to the scores topic always. Called `Alert` before; the JSON is unchanged.

    alert_id (its wire name) is derived from message id, model and index version, so a
    replay after a crash repeats the same id (and the same Kafka key) rather than a new one.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    alert_id: str
    message_id: str
    score: float
    is_alert: bool
    threshold: float
    category: str | None
    category_distribution: dict[str, float]
    evidence: list[Evidence]
    model: str
    index_version: str
    scored_at: str
    processing_ms: float
    passthrough: dict[str, Any]
    # Set on an alert raised after the fact: a member of a campaign let through at first,
    # scored again once an analyst confirmed another member as fraud.
    retroactive: bool = False
    campaign_id: str | None = None

    @classmethod
    def build(
        cls,
        message: Message,
        assessment: Assessment,
        *,
        threshold: float,
        model: str,
        index_version: str,
        scored_at: str,
        processing_ms: float,
        retroactive: bool = False,
        campaign_id: str | None = None,
    ) -> "Decision":
        alert_id = uuid.uuid5(_ALERT_NAMESPACE, f"{message.id}|{model}|{index_version}")
        return cls(
            alert_id=str(alert_id),
            message_id=message.id,
            threshold=threshold,
            model=model,
            index_version=index_version,
            scored_at=scored_at,
            processing_ms=round(processing_ms, 3),
            passthrough=message.passthrough(),
            retroactive=retroactive,
            campaign_id=campaign_id,
            **assessment.model_dump(),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Decision":
        return cls.model_validate_json(raw)


# The old name of Decision, kept for code written before the rename (same class, same JSON).
Alert = Decision
