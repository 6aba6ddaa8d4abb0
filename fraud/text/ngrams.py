"""The character n-gram term of the key similarity (README, Languages).

A sentence encoder keeps meaning and drops surface form; for Chinese SMS the surface
(the exact characters of a scam script, its masks, its short codes) carries much of the
signal, which is why character n-gram TF-IDF is the strong baseline there. With a weight
w in [0, 1] the similarity of a message to a retrieved reference becomes

    s = (1 - w) * dense cosine + w * character n-gram TF-IDF cosine

on the normalized texts. A convex mix keeps s in [-1, 1], the scale on which the null
key's tau, the temperature and their bounds were set; w = 0 is the dense cosine alone,
exactly. Retrieval is unchanged (FAISS on the dense embedding); only the similarity of
the keys it returns is mixed.

The vectors: character n-grams (spaces included, as `char-tfidf+logreg`) of the
normalized, lowercased text, hashed (no vocabulary to keep), sublinear term frequency,
times an IDF learned from the references of an index snapshot, rows L2-normalized.
"""

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

from fraud.text.normalize import normalize

DEFAULT_NGRAM_RANGE = (1, 3)
_N_FEATURES = 2**20


def mix(dense: np.ndarray, ngram: np.ndarray, weight: float) -> np.ndarray:
    """The key similarity: (1 - weight) * dense + weight * ngram; `dense` itself at 0."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the n-gram weight must be in [0, 1], got {weight}")
    if weight == 0.0:
        return dense
    return ((1.0 - weight) * dense + weight * ngram).astype(dense.dtype)


class CharNgrams:
    """TF-IDF vectors of character n-grams with an IDF fitted on one set of texts."""

    def __init__(self, ngram_range: tuple[int, int], idf: np.ndarray) -> None:
        self.ngram_range = ngram_range
        self._hashing = _hashing(ngram_range)
        self._tfidf = TfidfTransformer(sublinear_tf=True)
        self._tfidf.idf_ = idf

    @classmethod
    def fit(
        cls, texts: Sequence[str], ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE
    ) -> "CharNgrams":
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"n-gram range must be 1 <= min <= max, got {ngram_range}")
        texts = list(texts)
        if not texts:
            return cls(ngram_range, np.ones(_N_FEATURES, np.float32))
        counts = _hashing(ngram_range).transform(texts)
        idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
        return cls(ngram_range, idf.astype(np.float32))

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """(n, features) float32 rows of unit length (a text without characters: zeros)."""
        texts = list(texts)
        if not texts:  # HashingVectorizer cannot transform nothing
            return sparse.csr_matrix((0, _N_FEATURES), dtype=np.float32)
        counts = self._hashing.transform(texts)
        return self._tfidf.transform(counts).astype(np.float32).tocsr()


def pair_cosines(queries: sparse.csr_matrix, keys: sparse.csr_matrix, m: int) -> np.ndarray:
    """(n, m): the dot product of query row i with key rows i*m .. i*m + m - 1 (unit rows:
    their cosine). `keys` holds the n * m key rows, query by query."""
    n = queries.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float32)
    repeated = queries[np.repeat(np.arange(n), m)]
    dots = np.asarray(repeated.multiply(keys).sum(axis=1), dtype=np.float32).ravel()
    return dots.reshape(n, m)


def _prepare(text: str) -> str:
    return normalize(text).lower()


def _hashing(ngram_range: tuple[int, int]) -> HashingVectorizer:
    return HashingVectorizer(
        preprocessor=_prepare,
        analyzer="char",
        ngram_range=tuple(ngram_range),
        n_features=_N_FEATURES,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )
