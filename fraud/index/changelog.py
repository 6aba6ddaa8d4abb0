"""The reference bank as a changelog: one record per change, keyed by reference id.

A record's value is the reference as it now is (JSON, with its embedding in base64 so every
worker applies exactly the same vector without re-encoding); a tombstone (no value) removes
it. On a compacted topic the latest record per id is the bank. Pure encoding and decoding
here; the Kafka side is workers/state/bank.py.
"""

import base64
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from fraud.errors import SchemaError
from fraud.index.reference_index import Reference, ReferenceIndex


@dataclass(frozen=True)
class BankChange:
    reference_id: int
    reference: Reference | None  # None: removed
    vector: np.ndarray | None
    model: str | None
    verdict_ms: int | None = None  # when the analyst verdict behind it reached Kafka


def change_key(reference_id: int) -> bytes:
    return str(reference_id).encode()


def encode_upsert(
    ref: Reference, vector: np.ndarray, model: str, verdict_ms: int | None = None
) -> bytes:
    """verdict_ms: the Kafka timestamp of the verdict that caused the change, if one did
    (workers measure how long verdicts take to reach them from it)."""
    vec = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    body = {
        "reference": asdict(ref),
        "model": model,
        "dim": int(vec.size),
        "vector": base64.b64encode(vec.tobytes()).decode(),
    }
    if verdict_ms is not None:
        body["verdict_ms"] = int(verdict_ms)
    return json.dumps(body, ensure_ascii=False).encode()


def changed_upsert(reference_id: int, value: bytes, **changes) -> bytes:
    """A bank record (as the topic has it) with some of its reference's fields changed
    (disabled, category, weight, changed_by, reason...): the same vector and model, so no
    encoder is needed (the console changes references this way)."""
    change = decode_change(change_key(reference_id), value)
    if change.reference is None or change.model is None:
        raise SchemaError("invalid_schema", f"bank record {reference_id}: nothing to change")
    return encode_upsert(replace(change.reference, **changes), change.vector, change.model)


def decode_change(key: bytes | None, value: bytes | None) -> BankChange:
    try:
        ref_id = int((key or b"").decode())
    except ValueError:
        raise SchemaError(
            "invalid_schema", f"bank record key {key!r} is not a reference id"
        ) from None
    if value is None:
        return BankChange(ref_id, None, None, None)
    try:
        body = json.loads(value)
        ref = Reference(**body["reference"])
        vector = np.frombuffer(base64.b64decode(body["vector"]), dtype="<f4")
    except (ValueError, KeyError, TypeError) as e:
        raise SchemaError("invalid_schema", f"bank record {ref_id}: {e}") from None
    if ref.id != ref_id or vector.size != body.get("dim"):
        raise SchemaError("invalid_schema", f"bank record {ref_id}: id or dim disagree")
    verdict_ms = body.get("verdict_ms")
    return BankChange(
        ref_id,
        ref,
        vector.astype(np.float32),
        body.get("model"),
        int(verdict_ms) if isinstance(verdict_ms, int) else None,
    )


def apply_change(index: ReferenceIndex, change: BankChange) -> str:
    """Apply one change; returns what happened ("upsert", "remove", "noop" or why skipped)."""
    if change.reference is None:
        return "remove" if index.remove(change.reference_id) else "noop"
    if change.model != index.model or change.vector.size != index.dim:
        return f"skipped: built with {change.model} (dim {change.vector.size})"
    index.upsert(change.reference, change.vector)
    return "upsert"
