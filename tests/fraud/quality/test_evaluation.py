import numpy as np
import pytest

from fraud.errors import ConfigError
from fraud.fitting import Dataset, Split
from fraud.quality import (
    AttentionVariant,
    LearnedAttentionVariant,
    evaluate,
    evaluation_variants,
)
from fraud.quality.evaluation import (
    classification_metrics,
    cross_validate,
    recall_by_category,
    summarize,
)
from fraud.quality.variants import EmbeddingLogReg
from tests.fakes import distinct_tail, unit_vectors


def _dataset(n: int = 120, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    texts = [f"{'scam' if f else 'hello'} message {distinct_tail(i)}" for i, f in enumerate(y)]
    data = Dataset(texts, y, ["lottery" if f else None for f in y])
    # Embeddings with a fraud direction, so the variants have something to learn.
    X = unit_vectors(n, 16, seed) + np.where(y[:, None], 0.8, 0.0) * np.eye(16)[0]
    return data, (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


class Spy:
    """Wraps a variant and records which texts it was fitted on and asked to score."""

    log: list[tuple[str, frozenset[str]]] = []

    def __init__(self) -> None:
        self.inner = AttentionVariant("spy")
        self.fitted = {}

    def fit(self, train: Split) -> None:
        self.inner.fit(train)
        indexed = {self.inner.index.reference(i).text for i in range(len(self.inner.index))}
        Spy.log.append(("index", frozenset(indexed)))

    def score(self, test: Split) -> np.ndarray:
        Spy.log.append(("score", frozenset(test.data.texts)))
        return self.inner.score(test)


def test_no_held_out_text_is_ever_in_its_folds_index_or_threshold_fit():
    data, X = _dataset()
    Spy.log = []
    results = cross_validate(data, X, {"spy": Spy}, folds=4, inner_folds=3, timing_sample=0)
    assert len(results["spy"].thresholds) == 4
    # Per outer fold: 3 inner (index, score) pairs, then the outer (index, score).
    per_fold = 2 * 3 + 2
    assert len(Spy.log) == 4 * per_fold
    held_out_seen = set()
    for f in range(4):
        fold = Spy.log[f * per_fold : (f + 1) * per_fold]
        outer_index, outer_test = fold[-2][1], fold[-1][1]
        assert not outer_index & outer_test  # the test that fails on a leak
        assert outer_index | outer_test == set(data.texts)
        for _, texts in fold[:-2]:  # threshold fitting saw training texts only
            assert not texts & outer_test
        held_out_seen |= outer_test
    assert held_out_seen == set(data.texts)  # every message held out exactly once overall


@pytest.mark.parametrize(
    "make",
    [
        EmbeddingLogReg,
        lambda: AttentionVariant("a"),
        lambda: AttentionVariant("a", ngram=True),
        lambda: LearnedAttentionVariant(epochs=10, lexical=False),
        lambda: LearnedAttentionVariant(fit_ngram=True, epochs=10, lexical=False),
    ],
)
def test_variants_learn_the_synthetic_signal(make):
    data, X = _dataset(200)
    results = cross_validate(data, X, {"v": make}, folds=3, timing_sample=2)
    summary = summarize(results["v"], data)
    assert summary["roc_auc"] > 0.9
    assert len(results["v"].score_ms) == 6 and summary["score_ms_p99"] > 0


def test_metrics_by_hand():
    y = np.array([1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    m = classification_metrics(y, scores, scores >= 0.5)
    assert m["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 fraud/legit pairs ordered right
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # average precision
    assert m["recall_at_1pct_fpr"] == 0.5  # before the first false positive


def test_recall_by_category():
    y = np.array([1, 1, 1, 0], bool)
    predicted = np.array([1, 0, 1, 1], bool)
    cats = ["lottery", "lottery", "delivery", None]
    assert recall_by_category(y, predicted, cats) == {"delivery": 1.0, "lottery": 0.5}


def test_variants_over_several_encoders_share_the_folds():
    data, X = _dataset()
    report, results = evaluate(
        data,
        {"a": X, "b": X[:, ::-1].copy()},
        variants=evaluation_variants(),
        folds=3,
        seed=0,
        threshold_rule={},
        variant_names=["attention", "char-tfidf+logreg"],
        inner_folds=0,  # no thresholds fitted: decisions at 0.5
    )
    assert set(report["variants"]) == {"char-tfidf+logreg", "attention [a]", "attention [b]"}
    assert report["variants"]["attention [a]"]["thresholds"] == [0.5, 0.5, 0.5]
    # The same embeddings up to a permutation of dimensions: the same scores.
    assert np.allclose(results["attention [a]"].scores, results["attention [b]"].scores)


def test_evaluate_compares_the_variants_it_is_given():
    """The registry is an argument (sentence-transformers' evaluators receive the model):
    evaluate runs what it is handed, and names an unknown one against that registry."""
    data, X = _dataset()
    Spy.log = []
    report, _ = evaluate(data, X, variants={"spy": Spy}, folds=3, seed=0, threshold_rule={})
    assert set(report["variants"]) == {"spy"} and Spy.log
    with pytest.raises(ConfigError, match=r"unknown variants \['attention'\].*\['spy'\]"):
        evaluate(
            data,
            X,
            variants={"spy": Spy},
            folds=3,
            seed=0,
            threshold_rule={},
            variant_names=["attention"],
        )
