"""The recipient history: bounds, the changelog record, and scoring in stream order."""

import gc
import tracemalloc

import numpy as np
import pytest

import fraud.scoring.history as history_module
from fraud.config import HistorySettings, ScorerSettings
from fraud.datasets import LabeledText
from fraud.index import ReferenceIndex
from fraud.scoring import Detector
from fraud.scoring.history import (
    Arrival,
    HistoryEntry,
    HistoryScorer,
    RecipientHistory,
    decode_state,
    encode_state,
)
from tests.fakes import unit_vectors

DIM = 8


def _entry(i: int, at_ms: int = 0, vector=None) -> HistoryEntry:
    v = unit_vectors(1, DIM, seed=i)[0] if vector is None else vector
    return HistoryEntry(f"m{i}", v, "phishing", 0.6, at_ms, seq=i)


def _arrival(i: int, recipient: str = "r", at_ms: int = 0, shard: int = 0) -> Arrival:
    return Arrival(f"m{i}", recipient, at_ms, seq=i, shard=shard)


def test_keeps_the_last_n_entries_per_recipient():
    h = RecipientHistory(HistorySettings(max_per_recipient=3))
    for i in range(5):
        h.remember(_arrival(i), _entry(i))
    assert [e.message_id for e in h.entries("r")] == ["m2", "m3", "m4"]


def test_a_message_sees_only_earlier_unexpired_entries_and_never_itself():
    h = RecipientHistory(HistorySettings(ttl_s=10))
    h.remember(_arrival(1, at_ms=0), _entry(1, at_ms=0))
    h.remember(_arrival(5, at_ms=5_000), _entry(5, at_ms=5_000))
    h.remember(_arrival(9, at_ms=9_000), _entry(9, at_ms=9_000))
    seen = [e.message_id for e in h.keys_for(_arrival(6, at_ms=12_000))]
    assert seen == ["m5"]  # m1 expired (12 s > 10 s ttl), m9 comes later in the stream
    assert [e.message_id for e in h.keys_for(_arrival(5, at_ms=12_000))] == []  # not itself


def test_least_recently_seen_recipients_are_evicted_with_a_tombstone():
    h = RecipientHistory(HistorySettings(max_recipients=2))
    for i, r in enumerate(["a", "b", "c"]):
        h.remember(_arrival(i, r, shard=i), _entry(i))
    assert len(h) == 2 and h.entries("a") == [] and h.evicted == 1
    changes = h.take_changes()
    assert changes["a"] == (0, None)  # tombstone on a's partition
    assert [e.message_id for e in changes["c"][1]] == ["m2"]
    assert h.take_changes() == {}


def test_forget_drops_one_messages_entry_and_records_the_change():
    h = RecipientHistory(HistorySettings())
    for i in range(3):
        h.remember(_arrival(i, shard=2), _entry(i))
    h.take_changes()
    h.forget(_arrival(1, shard=2))  # a message whose scoring failed after it was remembered
    assert [e.message_id for e in h.entries("r")] == ["m0", "m2"] and h.entry_count() == 2
    assert [e.message_id for e in h.take_changes()["r"][1]] == ["m0", "m2"]
    h.forget(_arrival(7))  # never remembered: nothing changes
    assert h.take_changes() == {}
    h.forget(_arrival(0, shard=2))
    h.forget(_arrival(2, shard=2))
    assert len(h) == 0 and h.entry_count() == 0 and h.memory_bytes() == 0
    assert h.take_changes() == {"r": (2, None)}  # a tombstone


def test_forget_shards_drops_only_those_partitions():
    h = RecipientHistory(HistorySettings())
    h.remember(_arrival(0, "a", shard=0), _entry(0))
    h.remember(_arrival(1, "b", shard=1), _entry(1))
    assert h.forget_shards([1]) == 1
    assert h.entries("a") and not h.entries("b")
    assert h.memory_bytes() >= DIM * 4


def test_the_changelog_record_round_trips_exactly():
    entries = [_entry(i, at_ms=1000 * i) for i in range(3)]
    back = decode_state(encode_state(entries))
    assert [(e.message_id, e.category, e.score, e.at_ms, e.seq) for e in back] == [
        (e.message_id, e.category, e.score, e.at_ms, e.seq) for e in entries
    ]
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(back, entries, strict=True))


@pytest.mark.model
def test_a_batch_scores_as_if_its_messages_came_one_by_one(detector, encoder):
    texts = [
        "GreenGrid: homes on your street qualify for zero-cost solar panels. Reply YES",
        "Are we still on for lunch tomorrow?",
        "Final reminder from GreenGrid: your free solar grant expires Friday. Reply YES",
        "GreenGrid still holds a no-cost solar installation for your address. Reply YES",
    ]
    recipients = ["r1", "r2", "r1", "r1"]
    queries = encoder.encode(texts)
    arrivals = [Arrival(f"m{i}", r, 1000 * i, i) for i, r in enumerate(recipients)]
    settings = HistorySettings(min_score=0.05)
    together = (
        HistoryScorer(detector, RecipientHistory(settings))
        .score(arrivals, queries, texts)
        .assessments
    )
    one_by_one_history = HistoryScorer(detector, RecipientHistory(settings))
    one_by_one = [
        one_by_one_history.score([a], queries[i : i + 1], [texts[i]]).assessments[0]
        for i, a in enumerate(arrivals)
    ]
    assert [v.score for v in together] == pytest.approx([v.score for v in one_by_one], abs=1e-6)
    # The last message attended to the earlier ones of its recipient, and says so.
    cited = {e.message_id for e in together[3].evidence if e.source == "history"}
    assert cited and cited <= {"m0", "m2"}
    # Replayed against the state it left (a crash after the changelog write, before the
    # commit), the batch scores the same: entries from its own or later positions are unseen.
    replayed = one_by_one_history.score(arrivals, queries, texts).assessments
    assert [v.score for v in replayed] == pytest.approx([v.score for v in together], abs=1e-6)


@pytest.mark.model
def test_without_a_recipient_history_changes_nothing(detector, encoder):
    texts = ["Your parcel is held, pay the 1.99 fee at http://parcel-fee.example"] * 2
    queries = encoder.encode(texts)
    arrivals = [Arrival(f"m{i}", None, 0, i) for i in range(2)]
    history = RecipientHistory(HistorySettings(min_score=0.0))
    with_history = HistoryScorer(detector, history).score(arrivals, queries, texts)
    plain = detector.score(queries, texts)
    assert [a.score for a in with_history.assessments] == [a.score for a in plain.assessments]
    assert len(history) == 0
    assert set(with_history.timings) == {"search", "attention"}


def test_a_history_category_the_index_does_not_know_is_unspecified_and_adds_nothing():
    """History keys read the index's category codebook: scoring never adds a category to
    it (an entry from another index's time maps to the reserved 'unspecified')."""
    bank = unit_vectors(4, DIM, seed=1)
    index = ReferenceIndex("m", DIM)
    index.add([LabeledText(f"ref {i}", "fraud", "delivery") for i in range(4)], bank, "t")
    detector = Detector(None, index, ScorerSettings(top_k=2, null_similarity=0.9))
    history = RecipientHistory(HistorySettings(min_score=1.0))  # remembers nothing new
    far = unit_vectors(1, DIM, seed=99)[0]
    history.remember(_arrival(0), HistoryEntry("m0", far, "lottery", 0.9, 0, seq=0))
    before = list(index.categories)
    result = HistoryScorer(detector, history).score([_arrival(1)], far[None, :], ["t"])
    assert list(index.categories) == before == ["unspecified", "delivery"]
    cited = [e for e in result.assessments[0].evidence if e.source == "history"]
    assert [(e.message_id, e.category) for e in cited] == [("m0", "unspecified")]


def test_the_size_totals_follow_every_way_recipients_come_and_go():
    h = RecipientHistory(HistorySettings(max_per_recipient=2, max_recipients=2))

    def recount() -> tuple[int, int]:
        entries = [e for r in ("a", "b", "c") for e in h.entries(r)]
        return len(entries), sum(e.vector.nbytes for e in entries)

    for i, (r, shard) in enumerate([("a", 0), ("a", 0), ("a", 0), ("b", 1), ("c", 1)]):
        h.remember(_arrival(i, r, shard=shard), _entry(i))
        overhead = (
            history_module.ENTRY_OVERHEAD_BYTES * h.entry_count()
            + history_module.RECIPIENT_OVERHEAD_BYTES * len(h)
        )
        assert (h.entry_count(), h.memory_bytes() - overhead) == recount()
    h.restore("b", 1, None)
    h.restore("a", 0, [_entry(9)])
    h.forget_shards([0])
    assert h.entry_count() == recount()[0] == 1


def _fill(h: RecipientHistory, recipients: int, per_recipient: int, dim: int) -> None:
    """Entries made as HistoryScorer makes them: each vector a row of a batch's
    embeddings, here one in eight rows of each 64-row batch (the suspicious ones)."""
    n = 0
    while n < recipients * per_recipient:
        batch = unit_vectors(64, dim, seed=n)
        for row in range(0, 64, 8):
            r, i = n % recipients, n
            vector = batch[row]  # a view: the whole batch behind it
            h.remember(
                _arrival(i, f"+44 7700 {r:06d}"), HistoryEntry(f"m{i}", vector, "x", 0.5, 0, i)
            )
            n += 1


def test_a_history_filled_past_its_memory_cap_evicts_down_to_it_by_its_own_accounting():
    cap = 2**20
    h = RecipientHistory(HistorySettings(max_memory_bytes=cap, max_per_recipient=4))
    _fill(h, recipients=2000, per_recipient=4, dim=64)
    assert 0.95 * cap < h.memory_bytes() <= cap  # full, and not over
    assert h.evicted > 0 and len(h) < 2000
    entries = [e for r in range(2000) for e in h.entries(f"+44 7700 {r:06d}")]
    assert h.entry_count() == len(entries)
    assert h.memory_bytes() == sum(
        e.vector.nbytes + history_module.ENTRY_OVERHEAD_BYTES for e in entries
    ) + history_module.RECIPIENT_OVERHEAD_BYTES * len(h)
    changes = h.take_changes()
    tombstones = [r for r, (_, entries) in changes.items() if entries is None]
    assert len(tombstones) == 2000 - len(h)  # each recipient evicted and not back


def test_the_accounting_matches_the_memory_tracemalloc_measures():
    """What the store says it holds is what it holds, within 15%: no batch of embeddings
    kept alive behind a row, no per-entry cost left out."""
    for dim in (64, 384):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            h = RecipientHistory(HistorySettings(max_per_recipient=8))
            _fill(h, recipients=500, per_recipient=8, dim=dim)
            h.take_changes()
            gc.collect()
            measured = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert h.entry_count() == 4000
        assert 0.85 * measured <= h.memory_bytes() <= 1.15 * measured, (dim, measured)


# -- soft values: an entry carries its own score (issue 19) -------------------------------


def _borderline_detector() -> tuple[Detector, np.ndarray]:
    """A parameter-free detector over one fraud and one legit reference, and a message it
    scores about 0.36: borderline legit, above the history's min_score (0.3)."""
    eye = np.eye(DIM, dtype=np.float32)
    index = ReferenceIndex("m", DIM)
    items = [LabeledText("f", "fraud", "delivery"), LabeledText("l", "legit", None)]
    index.add(items, eye[:2], "t")
    settings = ScorerSettings(top_k=2, temperature=0.1, null_similarity=0.5, threshold=0.5)
    q = np.array([0.7, 0.75, 0.3, 0, 0, 0, 0, 0], np.float32)
    return Detector(None, index, settings), q / np.linalg.norm(q)


def _twice(detector: Detector, history: RecipientHistory, q: np.ndarray, text: str = "x"):
    """The same message sent twice to one recipient: both assessments."""
    arrivals = [Arrival("m0", "r", 0, 0), Arrival("m1", "r", 1000, 1)]
    return HistoryScorer(detector, history).score(arrivals, np.stack([q, q]), [text] * 2)


def test_a_borderline_messages_earlier_copy_gives_back_its_own_score():
    """One borderline legit message must not make its own copy look like fraud: the
    entry's key carries the entry's score, not the value fraud (issue 19)."""
    detector, q = _borderline_detector()
    first, second = _twice(detector, RecipientHistory(HistorySettings()), q).assessments
    assert 0.3 <= first.score <= 0.45  # remembered (min_score 0.3), not an alert
    assert second.score <= first.score + 0.01
    assert not second.is_alert


def test_a_confirmed_fraud_in_the_history_still_raises_a_near_copy():
    detector, q = _borderline_detector()
    alone = detector.score(q[None, :], ["x"]).assessments[0].score
    history = RecipientHistory(HistorySettings())
    near = q + 0.05 * unit_vectors(1, DIM, seed=3)[0]
    near = (near / np.linalg.norm(near)).astype(np.float32)
    # As the worker admits a fraud an analyst confirmed (workers/state/history.py): score 1.
    history.remember(_arrival(0), HistoryEntry("m0", near, "delivery", 1.0, 0, seq=0))
    raised = HistoryScorer(detector, history).score([_arrival(1)], q[None, :], ["x"])
    assessment = raised.assessments[0]
    assert assessment.score > alone + 0.3 and assessment.is_alert
    cited = [e for e in assessment.evidence if e.source == "history"]
    assert [(e.message_id, e.category) for e in cited] == [("m0", "delivery")]


def test_the_learned_heads_copy_rises_less_than_with_a_fraud_key():
    """The learned head reads the soft value too (log weights, legit and category values):
    its borderline message's copy stays below the alert threshold. (With a fraud key per
    entry, this message went from 0.32 to 0.66; the head's readout is not the parameter-
    free average, so it does not give back the exact score: 0.40 here.)"""
    from tests.fraud.scoring.test_head import _trained

    index, head, X, y, texts = _trained(lexical=False)
    detector = Detector(None, index, ScorerSettings(threshold=0.5), head)
    scores = np.array([a.score for a in detector.score(X, texts).assessments])
    i = int(np.flatnonzero((scores >= 0.3) & (scores < 0.45) & ~y)[0])
    first, second = _twice(
        detector, RecipientHistory(HistorySettings()), X[i], texts[i]
    ).assessments
    assert first.score == pytest.approx(scores[i], abs=1e-6)
    assert second.score <= first.score + 0.1 and not second.is_alert
