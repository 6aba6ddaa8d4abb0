"""What a message attends to: its keys, how their similarity is measured, and the category
codebook. Pure numpy: no FAISS here (the index that finds the keys is reference_index.py).

Keys come from the index (`ReferenceIndex.search`) and, for messages with a recipient,
from that recipient's history (fraud/scoring/history.py); `Keys.concat` puts the two side
by side, once `ReferenceIndex.attach_vectors` has given the index's keys their vectors
(history keys are not in the index and carry their own).
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from fraud.text.ngrams import DEFAULT_NGRAM_RANGE

# The reserved category: code 0 of every codebook. A fraud without a category has it, and
# so has a history key whose category the index does not know.
UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class KeySimilarity:
    """How the similarity of a key to a message is measured: the dense cosine, mixed with
    the character n-gram cosine of lengths `ngram_range` at `weight` (fraud/text/ngrams.py,
    `mix`): (1 - weight) * dense + weight * n-gram. Weight 0 (the default) is the dense
    cosine alone, and reads no text.

    One value for what the scorer settings (`ngram_weight`, `ngram_range`), a trained
    head's config and `fraud calibrate`'s fit each record as two fields.
    """

    weight: float = 0.0
    ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE

    def __post_init__(self) -> None:
        lo, hi = (int(n) for n in self.ngram_range)  # a list, when read from JSON
        object.__setattr__(self, "ngram_range", (lo, hi))
        object.__setattr__(self, "weight", float(self.weight))
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"the n-gram term's weight must be in [0, 1], got {self.weight}")
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max, got {lo}, {hi}")

    @property
    def reads_text(self) -> bool:
        """Whether the similarity needs the message's text (an n-gram term)."""
        return self.weight > 0

    @classmethod
    def of(cls, source: Any) -> "KeySimilarity":
        """The similarity recorded as `ngram_weight` and `ngram_range` by `source`: scorer
        settings, a head's config (attributes) or a fitted result (a mapping)."""
        if isinstance(source, Mapping):
            return cls(source["ngram_weight"], tuple(source["ngram_range"]))
        return cls(source.ngram_weight, tuple(source.ngram_range))

    def as_fields(self) -> dict[str, Any]:
        """The two fields it is recorded as (in a manifest's scorer parameters, head.json)."""
        return {"ngram_weight": self.weight, "ngram_range": list(self.ngram_range)}


# The dense cosine alone.
DENSE = KeySimilarity()


class Categories:
    """The codebook of fraud categories: code -> name, the column of each category in a
    category distribution.

    Code 0 is reserved for UNSPECIFIED. Codes are given when references bring a category
    (`add`, as the index changes); scoring only looks codes up (`code`), and a category the
    codebook does not know (a history entry from another index) maps to 0, so scoring
    never changes the codebook.
    """

    def __init__(self, names: Iterable[str | None] = ()) -> None:
        self._names: list[str] = [UNSPECIFIED]
        self._codes: dict[str, int] = {UNSPECIFIED: 0}
        for name in names:
            self.add(name)

    def add(self, name: str | None) -> int:
        """The code of `name`, given the next code when it is new (None: UNSPECIFIED)."""
        name = name or UNSPECIFIED
        if name not in self._codes:
            self._codes[name] = len(self._names)
            self._names.append(name)
        return self._codes[name]

    def code(self, name: str | None) -> int:
        """The code of `name`; 0 (UNSPECIFIED) for a name the codebook does not know."""
        return self._codes.get(name or UNSPECIFIED, 0)

    def __getitem__(self, code: int) -> str:
        return self._names[code]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __contains__(self, name: object) -> bool:
        return name in self._codes

    def __repr__(self) -> str:
        return f"Categories({self._names!r})"


@dataclass(frozen=True)
class Keys:
    """The keys of a batch, aligned (n, m): similarity, validity, label, category code, and
    the log of each key's weight (added to its attention logit; 0 for weight 1).

    The similarity is the one the search was asked for (`KeySimilarity`): it is what the
    attention reads and what the evidence shows.
    """

    similarities: np.ndarray
    ids: np.ndarray  # int64 reference id, -1 where missing or a history key
    valid: np.ndarray
    is_fraud: np.ndarray
    category_codes: np.ndarray
    log_weights: np.ndarray
    vectors: np.ndarray | None = None  # (n, m, dim) key embeddings, once attached
    # (n, m) object: for a key from the recipient's history, the id of that earlier message;
    # None for a key from the bank
    message_ids: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.ids.shape

    @staticmethod
    def concat(a: "Keys", b: "Keys") -> "Keys":
        """`a`'s keys followed by `b`'s, row by row. Either both have their vectors or
        neither does (ReferenceIndex.attach_vectors gives an index's keys theirs)."""
        if (a.vectors is None) != (b.vectors is None):
            raise ValueError(
                "one set of keys has vectors and the other not: attach them first "
                "(ReferenceIndex.attach_vectors)"
            )
        columns = {
            f.name: np.concatenate([getattr(a, f.name), getattr(b, f.name)], axis=1)
            for f in fields(Keys)
            if f.name not in ("vectors", "message_ids")
        }
        vectors = None if a.vectors is None else np.concatenate([a.vectors, b.vectors], axis=1)
        if a.message_ids is None and b.message_ids is None:
            message_ids = None
        else:
            message_ids = np.concatenate([_message_ids(a), _message_ids(b)], axis=1)
        return Keys(**columns, vectors=vectors, message_ids=message_ids)


def _message_ids(keys: Keys) -> np.ndarray:
    return np.full(keys.shape, None, object) if keys.message_ids is None else keys.message_ids
