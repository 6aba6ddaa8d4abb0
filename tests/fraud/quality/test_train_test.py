"""`fraud evaluate --train --test` (fraud/quality/train_test.py): nothing fitted sees the
test file, and its labels only measure."""

import numpy as np

from fraud.fitting import Dataset, Split
from fraud.quality import LabelMapping, train_test_evaluate
from fraud.quality.train_test import near_copies, unlabeled
from fraud.quality.variants import AttentionVariant, LearnedAttentionVariant, TfidfLogReg
from tests.fakes import distinct_tail, unit_vectors

DIM = 16


def _embedded(y: np.ndarray, seed: int) -> np.ndarray:
    """Embeddings with a fraud direction, so the variants have something to learn."""
    X = unit_vectors(len(y), DIM, seed) + np.where(y[:, None], 0.9, 0.0) * np.eye(DIM)[0]
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _train(n: int = 120) -> Split:
    y = np.random.default_rng(0).random(n) < 0.35
    texts = [
        f"{'claim your prize' if f else 'lunch at noon'} {distinct_tail(i)}"
        for i, f in enumerate(y)
    ]
    return Split(Dataset(texts, y, ["lottery" if f else None for f in y]), _embedded(y, 1))


def _test(n: int = 40) -> tuple[Split, np.ndarray]:
    """Test rows whose words all start with "ж": no training text has one."""
    y = np.random.default_rng(1).random(n) < 0.5
    texts = [" ".join("ж" + w for w in distinct_tail(10_000 + i).split()) for i in range(n)]
    return unlabeled(texts, _embedded(y, 2)), y


class Recorder:
    """Makes the variants and keeps each one, to look inside what was fitted."""

    def __init__(self, make) -> None:
        self.make, self.made = make, []

    def __call__(self):
        variant = self.make()
        self.made.append(variant)
        return variant


def _run(test: Split, y: np.ndarray, variants) -> tuple[dict, dict]:
    mappings = [LabelMapping("all", y, np.arange(len(y)))]
    return train_test_evaluate(
        _train(), test, mappings, variants, folds=2, threshold_rule={"target_fpr": 0.05}
    )


def test_nothing_fitted_holds_a_test_text_or_word():
    test, y = _test()
    tfidf = Recorder(TfidfLogReg)
    head = Recorder(lambda: LearnedAttentionVariant(fit_ngram=True, epochs=3))
    report, _ = _run(test, y, {"tfidf+logreg": tfidf, "head": head})
    assert len(tfidf.made) == len(head.made) == 3  # 2 out-of-fold fits, then the final one
    test_texts = set(test.data.texts)
    for variant in tfidf.made:
        words, chars = (t.vocabulary_ for _, t in variant.model[0].transformer_list)
        assert not any("ж" in w for w in words)  # "ж" is in no training text
        assert len(chars) and not any("ж" in c for c in chars)
    for variant in head.made:
        indexed = {variant.index.reference(i).text for i in range(len(variant.index))}
        assert indexed and not indexed & test_texts
    assert set(report["variants"]) == {"tfidf+logreg", "head"}
    assert report["variants"]["head"]["test"]["all"]["messages"] == len(y)


def test_the_test_labels_change_no_threshold_and_no_score():
    test, y = _test()
    # A text-only variant and one over the embeddings and an index of the training rows.
    variants = {"tfidf+logreg": TfidfLogReg, "attention": lambda: AttentionVariant("a")}
    first, first_scores = _run(test, y, variants)
    second, second_scores = _run(test, ~y, variants)  # every test label flipped
    for name in variants:
        a, b = first["variants"][name], second["variants"][name]
        assert a["threshold"] == b["threshold"]
        assert a["train_out_of_fold"] == b["train_out_of_fold"]
        np.testing.assert_array_equal(first_scores[name], second_scores[name])
        # ...while what they measure does change: the labels are read, after scoring.
        assert a["test"]["all"]["pr_auc"] != b["test"]["all"]["pr_auc"]


def test_the_threshold_holds_its_false_positive_rate_on_the_training_folds():
    test, y = _test()
    report, _ = _run(test, y, {"tfidf+logreg": TfidfLogReg})
    oof = report["variants"]["tfidf+logreg"]["train_out_of_fold"]
    assert oof["false_alert_rate"] <= 0.05
    assert report["protocol"]["threshold_rule"] == {"target_fpr": 0.05}


def test_near_copies_of_training_rows_are_counted():
    train = ["Your parcel is on hold, pay 1.99 at royal-fee.com/a1", "see you at six"]
    test = ["Your parcel is on hold, pay 2.49 at rm-parcel.info/b7", "a new message here"]
    assert near_copies(train, test).tolist() == [True, False]
