"""Labeled data as the fitting and the evaluation see it, and its grouped folds.

A `Dataset` is labeled texts, deduplicated, each with its near-duplicate group; a `Split`
is part of one with its embeddings. Fitting (`fraud calibrate`, `fraud train`) chooses
thresholds on inner cross-validated scores (`inner_scores`); the evaluation (fraud/quality)
cross-validates whole scorers on the same kind of folds.

Every fold here keeps a near-duplicate group whole (`grouped_folds`): exact deduplication
leaves templates that differ only in a link or an amount ("claim your £900 prize at
x.co/a" and "... £1000 prize at y.co/b"), and one of them in each part of a fold measures
memory, not generalization (issue 19: 68 UCI spam fall in such groups).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from fraud.datasets import UNSPECIFIED_CATEGORY, LabeledText
from fraud.errors import DataError
from fraud.index.reference_index import ReferenceIndex
from fraud.text.normalize import normalize

# A link (scheme, www. or a bare domain with a path) and a run of digits: what a campaign
# changes from one copy to the next.
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,6}(?:/\S*)?", re.I)
_DIGITS = re.compile(r"\d+")
NEAR_DUPLICATE_JACCARD = 0.8
SHINGLE = 3  # character n-grams compared by near_duplicate_groups
_CHUNK = 2000  # rows compared at once: bounds the memory of the pairwise products


def near_duplicate_key(text: str) -> str:
    """The text as near-duplicates share it: normalized, lowercased, links -> <u>, digit
    runs -> 0, whitespace collapsed."""
    masked = _URL.sub(" <u> ", normalize(text).lower())
    return " ".join(_DIGITS.sub("0", masked).split())


def near_duplicate_groups(
    texts: Sequence[str], jaccard: float = NEAR_DUPLICATE_JACCARD, n: int = SHINGLE
) -> np.ndarray:
    """A group id per text: texts are joined when the sets of character n-grams of their
    near-duplicate keys overlap by Jaccard >= `jaccard` (equal keys: Jaccard 1); groups
    are the connected components (a chain of near-copies is one group). Keys shorter
    than n are padded so that each has an n-gram."""
    keys = [k.ljust(n) for k in map(near_duplicate_key, texts)]
    if not keys:
        return np.zeros(0, dtype=np.int64)
    shingles = CountVectorizer(analyzer="char", ngram_range=(n, n), lowercase=False, binary=True)
    X = sparse.csr_matrix(shingles.fit_transform(keys), dtype=np.float32)
    sizes = np.asarray(X.sum(axis=1)).ravel()
    rows, cols = [], []
    for start in range(0, len(keys), _CHUNK):
        shared = (X[start : start + _CHUNK] @ X.T).tocoo()
        row = shared.row + start
        union = sizes[row] + sizes[shared.col] - shared.data
        keep = (row < shared.col) & (shared.data >= jaccard * np.maximum(union, 1))
        rows.append(row[keep])
        cols.append(shared.col[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    edges = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(len(keys), len(keys)))
    return connected_components(edges, directed=False)[1].astype(np.int64)


@dataclass(frozen=True)
class Dataset:
    """Labeled texts; `groups` is each text's near-duplicate group (computed from the
    texts when not given), which every fold keeps whole."""

    texts: list[str]
    y: np.ndarray  # bool, True = fraud
    categories: list[str | None]
    duplicates_removed: int = 0
    groups: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.groups is None:
            object.__setattr__(self, "groups", near_duplicate_groups(self.texts))

    @classmethod
    def from_labeled(cls, rows: Sequence[LabeledText]) -> "Dataset":
        """Keep the first of each normalized text. A text seen with both labels is dropped."""
        first: dict[str, LabeledText] = {}
        conflicting: set[str] = set()
        for row in rows:
            key = normalize(row.text)
            if key in first and first[key].label != row.label:
                conflicting.add(key)
            first.setdefault(key, row)
        kept = [r for k, r in first.items() if k not in conflicting]
        return cls(
            texts=[r.text for r in kept],
            y=np.array([r.label == "fraud" for r in kept]),
            categories=[r.category for r in kept],
            duplicates_removed=len(rows) - len(kept),
        )

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(
            [self.texts[i] for i in idx],
            self.y[idx],
            [self.categories[i] for i in idx],
            groups=self.groups[idx],
        )

    def stratified_sample(self, n: int, seed: int, skip: int = 0) -> "Dataset":
        """n messages with the set's share of frauds, in the set's order. With `skip`, the
        sample is drawn from the messages left after setting aside a first stratified sample
        of `skip`: `skip=n` gives a sample disjoint from `skip=0`'s (for choices that must
        not be made on the reported messages)."""
        idx = np.arange(len(self.y))
        if skip:
            _, idx = train_test_split(idx, train_size=skip, stratify=self.y, random_state=seed)
        if n < len(idx):
            idx, _ = train_test_split(idx, train_size=n, stratify=self.y[idx], random_state=seed)
        sample = self.subset(np.sort(idx))
        return Dataset(
            sample.texts, sample.y, sample.categories, self.duplicates_removed, sample.groups
        )


@dataclass(frozen=True)
class Split:
    """One part of a fold: texts and labels, with embeddings aligned row by row."""

    data: Dataset
    X: np.ndarray

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.data.subset(idx), self.X[idx])


class SplitScorer(Protocol):
    """A scorer fitted on one split and scoring another: a learned head over the split's
    own index (fraud/fitting/train_head.py), or any variant `fraud evaluate` compares."""

    def fit(self, train: Split) -> None: ...
    def score(self, test: Split) -> np.ndarray: ...


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds, stratified by label, that never split a near-duplicate group: the one way
    the project makes folds (the evaluation's outer and inner folds, the fitting's inner
    folds, the lexical term's out-of-fold logits). Too few groups of a class for k folds
    is a DataError that says how many there are."""
    y = np.asarray(y)
    for label in np.unique(y):
        n_groups = len(np.unique(np.asarray(groups)[y == label]))
        if n_groups < k:
            name = "fraud" if label else "legit"
            raise DataError(
                f"{k} folds need at least {k} groups of distinct {name} messages, there are "
                f"{n_groups} (near-duplicates count as one): add labeled rows or use fewer folds"
            )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def dataset_folds(data: Dataset, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """grouped_folds of a Dataset by its near-duplicate groups."""
    return grouped_folds(data.y, data.groups, k, seed)


def inner_scores(make: Callable[[], SplitScorer], train: Split, k: int, seed: int) -> np.ndarray:
    """Cross-validated scores of every training message, from scorers fitted without it
    or any of its near-duplicates."""
    out = np.zeros(len(train.data.y))
    for inner_train, inner_val in dataset_folds(train.data, k, seed):
        scorer = make()
        scorer.fit(train.take(inner_train))
        out[inner_val] = scorer.score(train.take(inner_val))
    return out


def split_index(train: Split, frauds_only: bool = False) -> tuple[ReferenceIndex, np.ndarray]:
    """The training split as a reference index, and each training row's reference id (-1
    where the row is not in the index)."""
    keep = train.data.y if frauds_only else np.ones(len(train.data.y), bool)
    index = ReferenceIndex("evaluation", train.X.shape[1])
    rows = np.flatnonzero(keep)
    items = [
        LabeledText(
            train.data.texts[i],
            "fraud" if train.data.y[i] else "legit",
            (train.data.categories[i] or UNSPECIFIED_CATEGORY) if train.data.y[i] else None,
        )
        for i in rows
    ]
    ids = np.full(len(keep), -1, dtype=np.int64)
    if len(rows):
        ids[rows] = index.add(items, train.X[rows], "fold")
    return index, ids
