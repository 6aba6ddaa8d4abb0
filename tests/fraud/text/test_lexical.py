"""The lexical term's logistic regression, fitted on the hashed columns its texts use."""

import csv

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression

from fraud.data import seed_references_path
from fraud.text.lexical import LexicalModel, _counts


def _seed() -> tuple[list[str], np.ndarray]:
    with seed_references_path().open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], np.array([r["label"] == "fraud" for r in rows], int)


def test_fitting_on_the_used_columns_gives_the_full_fits_weights():
    """Columns no text hashes to are left out of the fit; the weights must be those of
    the regression over all 2^19 columns, with 0 for every unused one."""
    texts, y = _seed()
    texts, y = texts[::2], y[::2]
    model = LexicalModel.fit(texts, y)
    features = TfidfTransformer(sublinear_tf=True).fit_transform(_counts(texts))
    full = LogisticRegression(C=10.0, max_iter=2000).fit(features, y)
    np.testing.assert_allclose(model.coef, full.coef_[0], atol=1e-5)
    assert abs(model.intercept - full.intercept_[0]) < 1e-5
    unused = np.setdiff1d(np.arange(features.shape[1]), features.indices)
    assert len(unused) > 0.9 * features.shape[1] and not model.coef[unused].any()
    held = texts[1::50]
    np.testing.assert_allclose(
        model.logit(held), features[1::50] @ full.coef_[0] + full.intercept_[0], atol=1e-4
    )
