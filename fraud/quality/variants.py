"""The scorers `fraud evaluate` compares, each fitted on a training split only.

Attention scorers (the design): the training split becomes a ReferenceIndex, T and tau
are fitted by log-loss with every training message masked out of its own keys. The
"+ char n-grams" variants fit the key similarity's character n-gram term (its weight and
n-gram lengths, fraud/text/ngrams.py) the same way, on the training split only, and the
learned head is then trained over keys with that similarity.
Baselines (what a team would pick otherwise): TF-IDF + logistic regression, logistic
regression on the same embeddings, k-nearest-neighbour vote on the same embeddings.
"""

import warnings
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline, make_union

from fraud.config import ScorerSettings
from fraud.fitting.calibration import (
    attention_fraud_scores,
    fit_key_similarity,
    fit_temperature_and_null,
)
from fraud.fitting.folds import Split, split_index
from fraud.fitting.train_head import HeadOnSplit
from fraud.index.keys import KeySimilarity
from fraud.scoring.detector import Detector
from fraud.text.normalize import normalize

TOP_K = 32


class AttentionVariant:
    """The parameter-free attention scorer with T and tau (and, with `ngram`, the n-gram
    term of the key similarity) fitted on the training split."""

    def __init__(
        self, name: str, frauds_only: bool = False, top_k: int = TOP_K, ngram: bool = False
    ) -> None:
        self.name, self.frauds_only, self.top_k, self.ngram = name, frauds_only, top_k, ngram
        self.fitted: dict[str, Any] = {"ngram_weight": 0.0, "ngram_range": (1, 3)}

    def fit(self, train: Split) -> None:
        self.index, self_ids = split_index(train, self.frauds_only)
        keys = self.index.search(train.X, self.top_k, exclude_ids=self_ids)
        if self.ngram:
            fitted = fit_key_similarity(self.index, keys, train.data.texts, train.data.y)
            fitted["train_log_loss"] = fitted.pop("log_loss")
            self.fitted = fitted
            return
        t, tau, loss = fit_temperature_and_null(
            keys.similarities, keys.valid, keys.is_fraud, train.data.y
        )
        self.fitted = {
            **self.fitted,
            "temperature": t,
            "null_similarity": tau,
            "train_log_loss": loss,
        }

    def score(self, test: Split) -> np.ndarray:
        similarity = KeySimilarity.of(self.fitted)
        keys = self.index.search(test.X, self.top_k, texts=test.data.texts, similarity=similarity)
        return attention_fraud_scores(
            keys.similarities,
            keys.valid,
            keys.is_fraud,
            self.fitted["temperature"],
            self.fitted["null_similarity"],
        )


class _TfidfLogReg:
    """TF-IDF features of the normalized text (`features`), then logistic regression."""

    uses_embeddings = False

    def features(self):
        raise NotImplementedError

    def fit(self, train: Split) -> None:
        self.model = make_pipeline(self.features(), LogisticRegression(C=10.0, max_iter=2000))
        self.model.fit(train.data.texts, train.data.y)

    def score(self, test: Split) -> np.ndarray:
        return self.model.predict_proba(test.data.texts)[:, 1]


def _tfidf(**options):
    return TfidfVectorizer(
        preprocessor=normalize, lowercase=True, sublinear_tf=True, min_df=2, **options
    )


class TfidfLogReg(_TfidfLogReg):
    """Word 1-2-grams and character 2-5-grams, TF-IDF, logistic regression."""

    name = "tfidf+logreg"

    def features(self):
        return make_union(
            _tfidf(ngram_range=(1, 2)), _tfidf(analyzer="char_wb", ngram_range=(2, 5))
        )


class CharTfidfLogReg(_TfidfLogReg):
    """Character 1-3-grams (spaces included), TF-IDF, logistic regression: the usual strong
    baseline for Chinese, which has no spaces between words to split on."""

    name = "char-tfidf+logreg"

    def features(self):
        return _tfidf(analyzer="char", ngram_range=(1, 3))


class EmbeddingLogReg:
    """Logistic regression on the sentence embeddings, C chosen by inner CV on log-loss."""

    name = "embedding+logreg"

    def fit(self, train: Split) -> None:
        self.model = LogisticRegressionCV(
            Cs=[0.3, 1, 3, 10, 30, 100], cv=3, scoring="neg_log_loss", max_iter=3000
        )
        with warnings.catch_warnings():  # scikit-learn 1.9 announces API changes here
            warnings.simplefilter("ignore", FutureWarning)
            self.model.fit(train.X, train.data.y)
        self.fitted = {"C": float(self.model.C_[0])}

    def score(self, test: Split) -> np.ndarray:
        return self.model.predict_proba(test.X)[:, 1]


class KnnVote:
    """Share of frauds among the k nearest training messages (cosine), k = 7."""

    name = "knn-vote"

    def __init__(self, k: int = 7) -> None:
        self.k = k

    def fit(self, train: Split) -> None:
        self.index, _ = split_index(train)

    def score(self, test: Split) -> np.ndarray:
        keys = self.index.search(test.X, self.k)
        return (keys.is_fraud & keys.valid).sum(axis=1) / np.maximum(keys.valid.sum(axis=1), 1)


class LearnedAttentionVariant(HeadOnSplit):
    """The trained attention head over the training split's index (fraud/scoring/head.py,
    trained as fraud/fitting/train_head.py's HeadOnSplit trains it).

    fit_ngram: fit the key similarity's n-gram term on the training split first
    (train_over_index); otherwise the config's ngram_weight (default 0: dense
    cosine)."""

    name = "learned attention"

    def detector(self, encoder, threshold: float) -> Detector:
        """The fitted head and its index as the one scoring path (fraud/scoring/detector.py), so a
        replay scores exactly as the worker would; `threshold` is the alert threshold."""
        params = ScorerSettings(
            top_k=self.head.config.top_k, threshold=float(np.clip(threshold, 0.0, 1.0))
        )
        return Detector(encoder, self.index, params, self.head)


# The head over keys whose similarity has the character n-gram term, fitted on the
# training part (README, Languages: it lifted Chinese and kept English).
SHIPPED = "learned attention + char n-grams"


def evaluation_variants() -> dict[str, Any]:
    """Every variant `fraud evaluate` compares, the shipped one last."""
    return {
        "char-tfidf+logreg": CharTfidfLogReg,
        "tfidf+logreg": TfidfLogReg,
        "embedding+logreg": EmbeddingLogReg,
        "knn-vote": KnnVote,
        "attention frauds-only": lambda: AttentionVariant("attention frauds-only", True),
        "attention": lambda: AttentionVariant("attention"),
        "attention + char n-grams": lambda: AttentionVariant(
            "attention + char n-grams", ngram=True
        ),
        "learned attention, no lexical": lambda: LearnedAttentionVariant(lexical=False),
        "learned attention": LearnedAttentionVariant,
        f"{SHIPPED} + query terms": lambda: LearnedAttentionVariant(
            fit_ngram=True, query_terms=True
        ),
        SHIPPED: lambda: LearnedAttentionVariant(fit_ngram=True),
    }
