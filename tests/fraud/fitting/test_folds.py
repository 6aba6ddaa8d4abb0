"""Labeled data for fitting and evaluation (fraud/fitting/folds.py): deduplication, samples,
folds, inner cross-validated scores and a split as an index."""

import numpy as np
import pytest

from fraud.datasets import LabeledText
from fraud.fitting import (
    Dataset,
    Split,
    dataset_folds,
    inner_scores,
    near_duplicate_groups,
    near_duplicate_key,
    split_index,
)
from fraud.quality.train_test import near_copies
from tests.fakes import distinct_tail, unit_vectors


def _dataset(n: int = 120, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    texts = [f"{'scam' if f else 'hello'} message {distinct_tail(i)}" for i, f in enumerate(y)]
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
    folds = dataset_folds(data, 3, seed=0)
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


# -- near-duplicate groups ---------------------------------------------------------------

# One scam, rewritten by its campaign: another link, another amount, another case.
SCAM_COPIES = (
    "URGENT: your parcel is on hold. Pay the 1.99 GBP fee at https://royal-mail.parcel-fee.com/x81",
    "Urgent: your parcel is on hold. Pay the 2.49 GBP fee at http://rm-redeliver.info/a7",
    "URGENT: Your parcel is on hold. Pay the 1.45 GBP fee at bit.ly/3kQz9 now",
)
PRIZE_COPIES = (
    "Congratulations! You have won a 900 pound prize. Call 09061701461 to claim, code KL341",
    "Congratulations! You have won a 2000 pound prize. Call 09066364589 to claim, code SK38",
)


def test_the_near_duplicate_key_masks_links_and_numbers():
    keys = {near_duplicate_key(t) for t in SCAM_COPIES[:2]}
    assert keys == {"urgent: your parcel is on hold. pay the 0.0 gbp fee at <u>"}


def test_near_duplicates_share_a_group_and_others_do_not():
    texts = [*SCAM_COPIES, *PRIZE_COPIES, "see you at the station at 6", "lunch tomorrow?"]
    groups = near_duplicate_groups(texts)
    assert len(set(groups[:3])) == 1 and len(set(groups[3:5])) == 1  # "bit.ly ... now": Jaccard
    assert len(set(groups)) == 4


def test_a_chain_of_near_copies_is_one_group():
    a = "your account is locked, verify your details today at the link below please"
    b = a.replace("today", "now")  # close to a
    c = b.replace("below please", "below")  # close to b, further from a
    assert len(set(near_duplicate_groups([a, b, c, "a different message entirely"]))) == 2


def _with_copies(n: int = 120, seed: int = 0) -> tuple[Dataset, list[list[int]]]:
    """A dataset with the scam's and the prize's copies among distinct messages, and
    the rows of each set of copies."""
    rows = [LabeledText(t, "fraud", "delivery") for t in SCAM_COPIES]
    rows += [LabeledText(t, "fraud", "lottery") for t in PRIZE_COPIES]
    rows += [
        LabeledText(t, "fraud" if y else "legit", "lottery" if y else None)
        for t, y in zip(_dataset(n, seed).texts, _dataset(n, seed).y, strict=True)
    ]
    return Dataset.from_labeled(rows), [[0, 1, 2], [3, 4]]


def test_exact_deduplication_alone_keeps_the_near_copies_apart():
    data, copies = _with_copies()
    assert data.duplicates_removed == 0  # all five copies survive deduplication
    assert len(set(data.texts[:5])) == 5
    assert len(set(data.groups[:3])) == 1 and len(set(data.groups[3:5])) == 1


@pytest.mark.parametrize("seed", range(5))
def test_near_duplicates_never_straddle_folds(seed):
    """The test that fails on ungrouped folds (StratifiedKFold puts the copies apart for
    most seeds: a scorer would be measured on a copy of what it was fitted on)."""
    data, copies = _with_copies(seed=seed)
    for _, held_rows in dataset_folds(data, 5, seed):
        held = set(held_rows.tolist())
        for rows in copies:
            assert len({r in held for r in rows}) == 1, f"copies {rows} split by a fold"
    held_out = np.concatenate([held for _, held in dataset_folds(data, 5, seed)])
    assert sorted(held_out.tolist()) == list(range(len(data.y)))


@pytest.mark.parametrize("seed", range(3))
def test_inner_scores_keep_near_copies_out_of_the_fitted_part(seed):
    """The memorizer scores 1 for a text with a near-copy among those it was fitted on."""
    data, _ = _with_copies(seed=seed)

    class NearCopyMemorizer(_Memorizer):
        def score(self, test: Split) -> np.ndarray:
            return near_copies(sorted(self.seen), test.data.texts).astype(float)

    split = Split(data, unit_vectors(len(data.y), 4))
    assert not inner_scores(NearCopyMemorizer, split, k=3, seed=seed).any()


def test_too_few_groups_for_the_folds_is_one_readable_line():
    from fraud.errors import DataError
    from fraud.fitting.folds import grouped_folds

    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    groups = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])  # two groups of frauds
    with pytest.raises(DataError, match="5 folds need at least 5 groups of distinct fraud"):
        grouped_folds(y, groups, 5, seed=13)
    assert len(grouped_folds(y, groups, 2, seed=13)) == 2
