"""The recipient's own history as keys: the idea the design starts from.

The query is the message a person just received; the keys are the known frauds of the
bank *and* the suspicious messages that same person received before. A scam campaign the
bank does not know yet scores middling on its first variant; that variant becomes a key
for the recipient's next messages, and the second or third paraphrase attends to it and
crosses the threshold, while the same paraphrase sent to a fresh recipient does not.

What is kept, per recipient: the embeddings of the recent messages that scored at least
`min_score` (bounded: the last `max_per_recipient`, none older than `ttl_s` in message
time, at most `max_recipients` recipients and `max_memory_bytes` by the store's own
accounting, least recently seen evicted first). An entry carries its own score as a soft
value (`RecipientHistory.keys`): a fraud key of that message's category weighted by the
score and a legit key weighted by one minus it, so an unconfirmed entry says no more than
the message's own score did, and a fraud an analyst confirmed (score 1) is a fraud key;
`weight` scales their attention against a bank key (log(weight) is added to the logits).

The store is a source of keys (`RecipientHistory.keys`), never a caller of the detector:
`HistoryScorer(detector, history).score(arrivals, queries, texts)` asks it for each
message's keys and hands them to `Detector.score` as extra keys.

Determinism: each entry remembers its position in the recipient's stream (`seq`: the
input offset in the worker), and a message only attends to entries before its own. A
batch replayed after a crash, or scored by the worker that took a partition over, gets
the same scores as the first time. Pure Python and numpy; the Kafka side (the changelog
topic that makes this state survive restarts) is in workers/state/history.py.
"""

import base64
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fraud.config import HistorySettings
from fraud.errors import SchemaError
from fraud.index.keys import UNSPECIFIED, Categories, Keys
from fraud.schemas import Assessment
from fraud.scoring.detector import Detector, ScoreResult

STATE_VERSION = 1
# A history entry without a fraud category (e.g. the head scored it on its lexical term)
# has UNSPECIFIED (fraud/index/keys.py), the reserved category of every index.
# What an entry and a recipient cost beyond the entry's vector, in bytes: measured with
# tracemalloc on CPython 3.11 (an entry: the dataclass, the numpy array's header, its id
# and numbers, its slot in the list, 382 bytes; a recipient: the ordered dict's and the
# shard map's entries, the list, the key, 223 bytes), rounded up for longer ids
# (tests/fraud/scoring/test_history.py checks the accounting against tracemalloc).
ENTRY_OVERHEAD_BYTES = 420
RECIPIENT_OVERHEAD_BYTES = 260


@dataclass(frozen=True)
class HistoryEntry:
    message_id: str
    vector: np.ndarray  # (dim,) float32, L2-normalized
    category: str
    score: float
    at_ms: int  # the message's timestamp
    seq: int  # its position in the recipient's stream


@dataclass(frozen=True)
class Arrival:
    """A message as the history sees it: who received it, when, and where in the stream."""

    message_id: str
    recipient: str | None
    at_ms: int
    seq: int
    shard: int = 0  # the input partition: state is restored and dropped per partition


class RecipientHistory:
    """The bounded per-recipient store. Changes are collected for the changelog.

    Entry and vector-byte totals are kept as recipients come and go, so the gauges the
    worker sets after every batch, and the memory bound checked at every change, cost
    nothing however many recipients it holds. Vectors are stored as arrays of their own:
    a row of a batch's embeddings would keep the whole batch alive, unaccounted."""

    def __init__(self, settings: HistorySettings) -> None:
        self.settings = settings
        self._entries: OrderedDict[str, list[HistoryEntry]] = OrderedDict()
        self._shard: dict[str, int] = {}
        self._changed: dict[str, int] = {}  # recipient -> shard, since take_changes()
        self._count = 0
        self._vector_bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self, recipient: str) -> list[HistoryEntry]:
        return list(self._entries.get(recipient, ()))

    def keys_for(self, arrival: Arrival) -> list[HistoryEntry]:
        """The entries `arrival` attends to: earlier in the stream, not expired, not itself."""
        entries = self._entries.get(arrival.recipient or "")
        if not entries:
            return []
        self._entries.move_to_end(arrival.recipient)
        oldest = arrival.at_ms - self.settings.ttl_s * 1000
        return [
            e
            for e in entries
            if e.seq < arrival.seq and e.at_ms >= oldest and e.message_id != arrival.message_id
        ]

    def keys(
        self, arrivals: Sequence[Arrival], queries: np.ndarray, categories: Categories
    ) -> Keys:
        """Each message's history entries as keys (keys_for), aligned (n, m) and padded
        with invalid keys, each with its vector and message id.

        Soft values: an entry of score s is two keys on its vector, a fraud key (the
        entry's category code in `categories`, the index's codebook read only: a category
        it does not know is UNSPECIFIED) of attention weight `settings.weight` * s and a
        legit key of weight `settings.weight` * (1 - s). Together they take the attention
        one key would, and carry the entry's own score as their value: a message's earlier
        copy gives back the message's own score instead of pushing it toward fraud, while a
        confirmed fraud (s = 1, admitted by the worker) is a whole fraud key. The learned
        head reads them the same way: log weights in its key logits, legit and category
        values (fraud/scoring/head.py). (Measured, issue 19: with one fraud key per entry,
        a second pass of the same messages doubled the false alerts; with soft values it
        left them unchanged.) With `settings.soft_values` off, every entry is a whole
        fraud key (s taken as 1): the rule before issue 19, which lifts the later variants
        of a campaign the bank does not know, and a borderline legit message's copy too.
        """
        per_row = [self.keys_for(a) for a in arrivals]
        n, dim = len(arrivals), queries.shape[1]
        m = 2 * max((len(e) for e in per_row), default=0)  # a fraud and a legit key each
        vectors = np.zeros((n, m, dim), np.float32)
        weights = np.zeros((n, m), np.float64)
        is_fraud = np.zeros((n, m), bool)
        is_fraud[:, 0::2] = True
        codes = np.zeros((n, m), np.int64)
        message_ids = np.full((n, m), None, object)
        for i, entries in enumerate(per_row):
            for j, e in enumerate(entries):
                s = min(max(float(e.score), 0.0), 1.0) if self.settings.soft_values else 1.0
                vectors[i, 2 * j : 2 * j + 2] = e.vector
                weights[i, 2 * j : 2 * j + 2] = (s, 1.0 - s)
                codes[i, 2 * j] = categories.code(e.category)
                message_ids[i, 2 * j : 2 * j + 2] = e.message_id
        valid = weights > 0  # a key of weight 0 (s = 1: no legit part) is no key
        sims = np.einsum("nmd,nd->nm", vectors, queries.astype(np.float32))
        log_weights = np.log(np.where(valid, weights * self.settings.weight, 1.0))
        return Keys(
            similarities=np.where(valid, sims, 0.0).astype(np.float32),
            ids=np.full((n, m), -1, np.int64),
            valid=valid,
            is_fraud=is_fraud & valid,
            category_codes=codes,
            log_weights=log_weights.astype(np.float32),
            vectors=vectors,
            message_ids=message_ids,
        )

    def remember(self, arrival: Arrival, entry: HistoryEntry) -> None:
        recipient = arrival.recipient
        entry = _owning(entry)
        oldest = entry.at_ms - self.settings.ttl_s * 1000
        kept = [
            e
            for e in self._entries.get(recipient, ())
            if e.message_id != entry.message_id and e.at_ms >= oldest
        ]
        kept.append(entry)
        kept.sort(key=lambda e: e.seq)
        self._put(recipient, arrival.shard, kept[-self.settings.max_per_recipient :])
        self._changed[recipient] = arrival.shard
        for old, shard in self._evict():
            self._changed[old] = shard  # a tombstone in the changelog
            self.evicted += 1

    def forget(self, arrival: Arrival) -> None:
        """Drop `arrival`'s own entry, if it has one: a message whose scoring failed, and
        that the worker dead-letters, leaves no key behind (the changelog gets the change)."""
        recipient = arrival.recipient
        entries = self._entries.get(recipient or "")
        if not entries or all(e.message_id != arrival.message_id for e in entries):
            return
        kept = [e for e in entries if e.message_id != arrival.message_id]
        if kept:
            self._put(recipient, self._shard[recipient], kept)
        else:
            self._pop(recipient)
        self._changed[recipient] = arrival.shard

    def take_changes(self) -> dict[str, tuple[int, list[HistoryEntry] | None]]:
        """Recipients changed since the last call: (shard, entries, or None if evicted)."""
        changes = {r: (shard, self._entries.get(r)) for r, shard in self._changed.items()}
        self._changed.clear()
        return changes

    def restore(self, recipient: str, shard: int, entries: list[HistoryEntry] | None) -> None:
        """Load one recipient's state from the changelog (None: a tombstone)."""
        if entries:
            self._put(recipient, shard, [_owning(e) for e in entries])
            self._evict()
        else:
            self._pop(recipient)

    def forget_shards(self, shards: Iterable[int]) -> int:
        """Drop the recipients of partitions this worker no longer owns; returns how many."""
        shards = set(shards)
        gone = [r for r, s in self._shard.items() if s in shards]
        for r in gone:
            self._pop(r)
            self._changed.pop(r, None)
        return len(gone)

    def entry_count(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """The store's accounting: the vectors, plus the measured cost of the Python
        objects of each entry and recipient (ENTRY_OVERHEAD_BYTES, RECIPIENT_OVERHEAD_BYTES)."""
        return (
            self._vector_bytes
            + ENTRY_OVERHEAD_BYTES * self._count
            + RECIPIENT_OVERHEAD_BYTES * len(self._entries)
        )

    def _put(self, recipient: str, shard: int, entries: list[HistoryEntry]) -> None:
        self._pop(recipient)
        self._entries[recipient], self._shard[recipient] = entries, shard
        self._count += len(entries)
        self._vector_bytes += sum(e.vector.nbytes for e in entries)

    def _pop(self, recipient: str) -> None:
        entries = self._entries.pop(recipient, None)
        self._shard.pop(recipient, None)
        if entries:
            self._count -= len(entries)
            self._vector_bytes -= sum(e.vector.nbytes for e in entries)

    def _over(self) -> bool:
        s = self.settings
        if len(self._entries) > s.max_recipients:
            return True
        # The recipient just changed is the most recent: it stays, even alone over the cap.
        return self.memory_bytes() > s.max_memory_bytes and len(self._entries) > 1

    def _evict(self) -> list[tuple[str, int]]:
        """Drop the least recently seen recipients while over a bound (max_recipients,
        max_memory_bytes): [(recipient, shard)]."""
        evicted = []
        while self._over():
            old = next(iter(self._entries))
            evicted.append((old, self._shard[old]))
            self._pop(old)
        return evicted


def _owning(entry: HistoryEntry) -> HistoryEntry:
    """`entry` with a vector that owns its memory (a view is copied)."""
    if entry.vector.base is None and entry.vector.dtype == np.float32:
        return entry
    return replace(entry, vector=np.array(entry.vector, np.float32))


# -- the changelog record of one recipient ------------------------------------------------


def encode_state(entries: Sequence[HistoryEntry]) -> bytes:
    body = {
        "version": STATE_VERSION,
        "entries": [
            {
                "message_id": e.message_id,
                "category": e.category,
                "score": e.score,
                "at_ms": e.at_ms,
                "seq": e.seq,
                "vector": base64.b64encode(np.asarray(e.vector, "<f4").tobytes()).decode(),
            }
            for e in entries
        ],
    }
    return json.dumps(body, ensure_ascii=False).encode()


def decode_state(raw: bytes) -> list[HistoryEntry]:
    try:
        body = json.loads(raw)
        return [
            HistoryEntry(
                message_id=e["message_id"],
                vector=np.frombuffer(base64.b64decode(e["vector"]), "<f4").astype(np.float32),
                category=e["category"],
                score=float(e["score"]),
                at_ms=int(e["at_ms"]),
                seq=int(e["seq"]),
            )
            for e in body["entries"]
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise SchemaError("invalid_schema", f"history record: {e!r}") from None


# -- scoring with history -----------------------------------------------------------------


class HistoryScorer:
    """Scores batches with the recipients' history as extra keys: the detector's scoring
    path, with `history` as a source of keys (None: the bank's keys only).

    A batch scores as if its messages came one by one: a message sees the history left by
    the earlier messages of the same batch. Vectorized in rounds: round r scores every
    recipient's r-th message of the batch (most batches need one round). A message that
    scores at least `min_score` is remembered for its recipient's next ones.
    """

    def __init__(self, detector: Detector, history: RecipientHistory | None) -> None:
        self.detector, self.history = detector, history

    def score(
        self, arrivals: Sequence[Arrival], queries: np.ndarray, texts: Sequence[str]
    ) -> ScoreResult:
        """One assessment per message, in order; the history's keys count as search in
        the timings."""
        if self.history is None:
            return self.detector.score(queries, texts)
        rounds = _rounds(arrivals)
        assessments: list[Assessment | None] = [None] * len(arrivals)
        timings: dict[str, float] = {}
        for r in range(int(rounds.max(initial=-1)) + 1):
            rows = np.flatnonzero(rounds == r)
            batch = [arrivals[i] for i in rows]
            started = time.perf_counter()
            extra = self.history.keys(batch, queries[rows], self.detector.index.categories)
            _add(timings, {"search": time.perf_counter() - started})
            result = self.detector.score(queries[rows], [texts[i] for i in rows], extra_keys=extra)
            _add(timings, result.timings)
            for i, a, assessment in zip(rows, batch, result.assessments, strict=True):
                assessments[i] = assessment
                self._remember(a, queries[i], assessment)
        return ScoreResult(assessments, timings)

    def _remember(self, arrival: Arrival, query: np.ndarray, assessment: Assessment) -> None:
        if arrival.recipient and assessment.score >= self.history.settings.min_score:
            entry = HistoryEntry(
                message_id=arrival.message_id,
                vector=np.asarray(query, np.float32),
                category=assessment.category or UNSPECIFIED,
                score=round(assessment.score, 6),
                at_ms=arrival.at_ms,
                seq=arrival.seq,
            )
            self.history.remember(arrival, entry)


def _rounds(arrivals: Sequence[Arrival]) -> np.ndarray:
    """Each message's round: how many earlier messages of the batch its recipient got
    (0 for a message without a recipient)."""
    seen: dict[str, int] = {}
    rounds = []
    for a in arrivals:
        r = seen[a.recipient] = seen.get(a.recipient, -1) + 1 if a.recipient else 0
        rounds.append(r)
    return np.array(rounds, dtype=np.int64)


def _add(timings: dict[str, float], more) -> None:
    for stage, seconds in more.items():
        timings[stage] = timings.get(stage, 0.0) + seconds
