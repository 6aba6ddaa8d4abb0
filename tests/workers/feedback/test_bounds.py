"""The feedback processor's memory bounds (workers/feedback/processor.py and recent.py),
without a broker: the recent messages by bytes, the false-positive citations by recency."""

import gc
import json
import tracemalloc

import pytest

from fraud.data import seed_references_path
from fraud.datasets import read_labeled_csv
from fraud.schemas import parse_message
from workers.feedback.processor import MAX_CITATIONS, Citations
from workers.feedback.recent import BoundedRecent, message_bytes


def test_citations_keep_the_most_recent_not_the_largest_ids():
    citations = Citations()
    ids = [f"fp-{n}" for n in range(MAX_CITATIONS + 5)]  # "fp-999" sorts after "fp-1004"
    assert all(citations.add(7, i) for i in ids)
    kept = json.loads(citations.record(7))
    assert kept == ids[5:] and citations.count(7) == MAX_CITATIONS  # oldest first
    assert not citations.add(7, ids[-1])  # a verdict delivered twice counts once
    restarted = Citations()
    restarted.load(7, citations.record(7))
    assert json.loads(restarted.record(7)) == kept
    assert restarted.add(7, "fp-new") and json.loads(restarted.record(7))[-1] == "fp-new"
    assert json.loads(restarted.record(7))[0] == ids[6]


def _records(texts: list[str], metadata: bool) -> list[bytes]:
    extra = {"metadata": {"sender": "RoyalMail", "channel": "sms"}} if metadata else {}
    return [
        json.dumps({"id": f"m-{i}", "text": t, "recipient": f"+44 7700 {i:06d}", **extra}).encode()
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize("metadata", [False, True])
def test_the_recent_messages_estimate_is_at_or_above_what_tracemalloc_measures(metadata):
    """The seed set's texts as messages (SMS lengths), with a recipient. Never below what is
    held; above it by the escapes of the record's JSON ("\\u00a3" for a pound sign) and the
    factor's margin."""
    texts = [row.text for row in read_labeled_csv(seed_references_path())]
    records = _records(texts, metadata)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        recent = BoundedRecent(len(records), max_bytes=2**30)
        for raw in records:
            message = parse_message(raw, 65536)
            recent.put(message.id, message, message_bytes(message, len(raw)))
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert measured <= recent.bytes <= 2 * measured, measured


def test_the_recent_messages_stay_under_their_byte_cap_oldest_out():
    records = _records(["x" * 2000] * 300 + ["short one"] * 10, metadata=False)
    recent = BoundedRecent(100_000, max_bytes=200_000)
    for raw in records:
        message = parse_message(raw, 65536)
        recent.put(message.id, message, message_bytes(message, len(raw)))
    assert recent.bytes <= 200_000 < recent.bytes + message_bytes(message, 2100)
    assert "m-0" not in recent and "m-309" in recent and "m-299" in recent
    assert recent.bytes == sum(
        message_bytes(parse_message(raw, 65536), len(raw))
        for raw in records
        if json.loads(raw)["id"] in recent
    )
