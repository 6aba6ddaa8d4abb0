"""Labeled data for fitting and evaluation (fraud/fitting/folds.py): deduplication, samples,
folds, inner cross-validated scores and a split as an index."""

import numpy as np

from fraud.datasets import LabeledText
from fraud.fitting import Dataset, Split, inner_scores, split_index, stratified_folds
from tests.fakes import unit_vectors


def _dataset(n: int = 120, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    texts = [f"{'scam' if f else 'hello'} message number {i}" for i, f in enumerate(y)]
    return Dataset(texts, y, ["lottery" if f else None for f in y])


def test_deduplication_is_after_normalization_and_drops_conflicts():
    rows = [
        LabeledText("Win a prize now", "fraud", "lottery"),
        LabeledText("  win a prize now", "fraud", "lottery"),  # lower case: another text
        LabeledText("Ｗin a prize now", "fraud", "lottery"),  # fullwidth W: same after NFKC
        LabeledText("see you at 5", "legit", None),
        LabeledText("ok", "legit", None),
        LabeledText("ok", "fraud", "unspecified"),  # one text, two labels: dropped
    ]
    data = Dataset.from_labeled(rows)
    assert data.texts == ["Win a prize now", "  win a prize now", "see you at 5"]
    assert data.duplicates_removed == 3


def test_a_stratified_sample_keeps_the_fraud_share_and_skip_gives_a_disjoint_one():
    data = _dataset(n=400, seed=3)
    first = data.stratified_sample(100, seed=13)
    second = data.stratified_sample(100, seed=13, skip=100)
    assert len(first.y) == len(second.y) == 100
    assert abs(first.y.mean() - data.y.mean()) < 0.02
    assert not set(first.texts) & set(second.texts)
    assert first.texts == data.stratified_sample(100, seed=13).texts  # reproducible
    assert first.texts == [t for t in data.texts if t in set(first.texts)]  # the set's order


def test_folds_are_stratified_and_cover_every_message_once():
    data = _dataset(n=90, seed=1)
    folds = stratified_folds(data.y, 3, seed=0)
    held_out = np.concatenate([test for _, test in folds])
    assert sorted(held_out.tolist()) == list(range(90))
    for train, test in folds:
        assert not set(train) & set(test)
        assert abs(data.y[test].mean() - data.y.mean()) < 0.05


class _Memorizer:
    """Scores a text 1 when it was in the training part: a leak would show as a 1."""

    def fit(self, train: Split) -> None:
        self.seen = set(train.data.texts)

    def score(self, test: Split) -> np.ndarray:
        return np.array([float(t in self.seen) for t in test.data.texts])


def test_inner_scores_come_from_scorers_fitted_without_the_message():
    data = _dataset()
    split = Split(data, unit_vectors(len(data.y), 4))
    assert not inner_scores(_Memorizer, split, k=3, seed=0).any()


def test_a_split_as_an_index_holds_its_rows_under_their_ids():
    data = _dataset(n=20, seed=2)
    split = Split(data, unit_vectors(20, 4, seed=2))
    index, ids = split_index(split, frauds_only=True)
    assert len(index) == int(data.y.sum()) and (ids[~data.y] == -1).all()
    for row in np.flatnonzero(data.y):
        ref = index.reference(int(ids[row]))
        assert (ref.text, ref.label, ref.category) == (data.texts[row], "fraud", "lottery")
