"""Analyst verdicts, and how each becomes a change to the reference bank.

A verdict `{message_id, verdict: fraud|legit, category?, reason?, analyst?, text?}` says
what a message really was. A confirmed fraud becomes a fraud reference with its category;
a false positive becomes a legit reference, which sits next to the keys that caused the
alert and takes attention away from them. The reference id is derived from the message
id, so a replayed or repeated verdict updates the same reference instead of adding one.
"""

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraud.index.reference_index import Reference
from fraud.schemas import decode_json_object, invalid_schema

# Ids from feedback live above 2**40, far from the sequential ids of `fraud index build`.
_FEEDBACK_ID_BASE = 2**40
FEEDBACK_SOURCE = "feedback:"  # a verdict's reference has source "feedback:<message id>"


class AnalystVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(min_length=1, max_length=256)
    verdict: Literal["fraud", "legit"]
    category: str | None = Field(None, max_length=64)
    reason: str | None = Field(None, max_length=1000)
    analyst: str | None = Field(None, max_length=128)
    text: str | None = Field(None, max_length=10_000)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


# An analyst verdict is a few fields and perhaps the message's text: larger is not one.
MAX_VERDICT_BYTES = 256 * 1024


def parse_verdict(raw: bytes | None) -> AnalystVerdict:
    """Decode one verdict record, or raise SchemaError, whatever the bytes (the same
    decoding and limits as a message: fraud.schemas.decode_json_object)."""
    obj = decode_json_object(raw or b"", MAX_VERDICT_BYTES)
    try:
        return AnalystVerdict.model_validate(obj)
    except ValidationError as e:
        raise invalid_schema(e, "verdict") from None


def reference_id_for(message_id: str) -> int:
    digest = hashlib.sha256(message_id.encode("utf-8")).digest()
    return _FEEDBACK_ID_BASE + int.from_bytes(digest[:5], "big")


def verdict_reference(verdict: AnalystVerdict, text: str) -> Reference:
    fraud = verdict.verdict == "fraud"
    return Reference(
        id=reference_id_for(verdict.message_id),
        text=text,
        label=verdict.verdict,
        category=(verdict.category or "unspecified").lower() if fraud else None,
        source=f"{FEEDBACK_SOURCE}{verdict.message_id}",
        changed_by=verdict.analyst,
        reason=verdict.reason,
    )
