"""The lexical term of the learned head: logistic regression on hashed n-grams of the text.

The sentence encoder keeps meaning and drops surface form (numbers, short codes, "txt",
currency signs), which is where much of SMS spam's signal lives. This model reads that
surface: word 1-2-grams and character 2-5-grams, hashed (no vocabulary to store), TF-IDF
weighted with sublinear term frequency, fed to a logistic regression. Its logit enters
the head as one more linear term on the query beside the attention read-out.

Stored as plain arrays (idf, coef, intercept) in safetensors: no pickle.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression

from fraud.text.normalize import normalize

LEXICAL_WEIGHTS = "lexical.safetensors"
_N_FEATURES = 2**18
_VECTORIZERS = (
    HashingVectorizer(
        preprocessor=normalize,
        ngram_range=(1, 2),
        n_features=_N_FEATURES,
        alternate_sign=False,
        norm=None,
    ),
    HashingVectorizer(
        preprocessor=normalize,
        analyzer="char_wb",
        ngram_range=(2, 5),
        n_features=_N_FEATURES,
        alternate_sign=False,
        norm=None,
    ),
)


def _counts(texts: list[str]) -> sparse.csr_matrix:
    return sparse.hstack([v.transform(texts) for v in _VECTORIZERS], format="csr")


class LexicalModel:
    def __init__(self, idf: np.ndarray, coef: np.ndarray, intercept: float) -> None:
        self.idf, self.coef, self.intercept = idf, coef, intercept
        self._tfidf = TfidfTransformer(sublinear_tf=True)
        self._tfidf.idf_ = idf

    @classmethod
    def fit(cls, texts: list[str], y: np.ndarray, C: float = 10.0) -> "LexicalModel":
        counts = _counts(texts)
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        features = tfidf.transform(counts)
        # Fitted on the hashed columns that occur in these texts only: an empty column's
        # gradient is zero from the start, so its weight stays 0 and the optimum is the
        # same, but L-BFGS's work per step is over every column (10x faster on 1,500 UCI
        # messages, the same weights to 1e-12).
        used = np.unique(features.indices)
        model = LogisticRegression(C=C, max_iter=2000).fit(features[:, used], y)
        coef = np.zeros(features.shape[1], np.float32)
        coef[used] = model.coef_[0]
        return cls(tfidf.idf_.astype(np.float32), coef, float(model.intercept_[0]))

    def logit(self, texts: list[str]) -> np.ndarray:
        features = self._tfidf.transform(_counts(list(texts)))
        return np.asarray(features @ self.coef, dtype=np.float64) + self.intercept

    @classmethod
    def out_of_fold_logits(
        cls,
        texts: list[str],
        y: np.ndarray,
        folds: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        """Each text's logit from a model fitted without it, for training the head on.
        `folds` (fit rows, held rows) come from the caller (fraud.fitting.folds: grouped
        by near-duplicates, so a copy of a text in the fitted part cannot vouch for it)."""
        out = np.zeros(len(texts))
        for fit_idx, held_idx in folds:
            model = cls.fit([texts[i] for i in fit_idx], y[fit_idx])
            out[held_idx] = model.logit([texts[i] for i in held_idx])
        return out

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "idf": self.idf,
                "coef": self.coef,
                "intercept": np.array([self.intercept], np.float32),
            },
            str(Path(directory) / LEXICAL_WEIGHTS),
        )

    @classmethod
    def load(cls, directory: Path) -> "LexicalModel":
        from safetensors.numpy import load_file

        arrays = load_file(str(Path(directory) / LEXICAL_WEIGHTS))
        return cls(arrays["idf"], arrays["coef"], float(arrays["intercept"][0]))
