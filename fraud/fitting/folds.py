"""Labeled data as the fitting and the evaluation see it, and its stratified folds.

A `Dataset` is labeled texts, deduplicated; a `Split` is part of one with its embeddings.
Fitting (`fraud calibrate`, `fraud train`) chooses thresholds on inner cross-validated
scores (`inner_scores`); the evaluation (fraud/quality) cross-validates whole scorers on
the same folds.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from fraud.datasets import UNSPECIFIED_CATEGORY, LabeledText
from fraud.index.reference_index import ReferenceIndex
from fraud.text.normalize import normalize


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    y: np.ndarray  # bool, True = fraud
    categories: list[str | None]
    duplicates_removed: int = 0

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
        return Dataset([self.texts[i] for i in idx], self.y[idx], [self.categories[i] for i in idx])

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
        return Dataset(sample.texts, sample.y, sample.categories, self.duplicates_removed)


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


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def inner_scores(make: Callable[[], SplitScorer], train: Split, k: int, seed: int) -> np.ndarray:
    """Cross-validated scores of every training message, from scorers fitted without it."""
    out = np.zeros(len(train.data.y))
    for inner_train, inner_val in stratified_folds(train.data.y, k, seed):
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
