"""`fraud evaluate --train A.csv[,B.csv] --test C.csv`: fit on some files, score another.

Cross-validation inside one collection measures how well a scorer knows that collection;
a team deploying it meets messages from elsewhere (issue 19: the UCI-trained head ranked
below TF-IDF on modern smishing it had never seen). Protocol, the same for every variant:

  1. the training rows (every training file, deduplicated after normalization) are all a
     variant is fitted on: the reference index, T and tau, the key similarity's n-gram
     term, the head, its lexical term, the baselines' vocabularies and weights;
  2. the alert threshold is chosen on out-of-fold scores of the training rows (k folds
     that keep near-duplicate groups whole, fraud/fitting/folds.py), for the threshold
     rule given (e.g. a 1% false-positive rate);
  3. the variant is fitted once more on all training rows, and scores the test file once,
     its rows as given (not deduplicated), with no label passed in;
  4. the test labels are read only to measure, under each label mapping (e.g. fraud =
     smishing+spam, and smishing alone against ham): precision, recall, F1 and the
     false-alert rate at the fitted threshold, PR-AUC, ROC-AUC and recall at 1% FPR.

The report also counts the test rows that have a near-duplicate among the training rows:
the share of the test that is not new.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraud.fitting.calibration import choose_threshold
from fraud.fitting.folds import Dataset, Split, inner_scores, near_duplicate_groups
from fraud.quality.evaluation import Variant, classification_metrics


@dataclass(frozen=True)
class LabelMapping:
    """One way to read the test file's labels: rows labeled `fraud` are frauds, rows
    labeled `legit` legit, the others left out of this mapping's figures."""

    name: str
    y: np.ndarray  # bool per kept row
    rows: np.ndarray  # the kept rows' positions in the test file


def unlabeled(texts: Sequence[str], X: np.ndarray) -> Split:
    """The test file as a variant sees it: texts and embeddings, every label False."""
    n = len(texts)
    return Split(Dataset(list(texts), np.zeros(n, bool), [None] * n), X)


def measure(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """classification_metrics at `threshold`, with the counts of messages and frauds."""
    y = np.asarray(y, bool)
    return {
        "messages": int(len(y)),
        "fraud": int(y.sum()),
        **classification_metrics(y, scores, scores >= threshold),
    }


def train_test_variant(
    make: Callable[[], Variant],
    train: Split,
    test: Split,
    mappings: Sequence[LabelMapping],
    *,
    folds: int,
    seed: int,
    threshold_rule: Mapping[str, float],
) -> dict[str, Any]:
    """One variant through the protocol (module docstring); the test split's labels are
    never read here, only the mappings' (after scoring)."""
    started = time.perf_counter()
    oof = inner_scores(make, train, folds, seed)  # grouped folds of the training rows
    threshold = float(choose_threshold(oof, train.data.y, **threshold_rule))
    oof_s = time.perf_counter() - started
    variant = make()
    variant.fit(train)
    scores = np.asarray(variant.score(test), dtype=np.float64)
    return {
        "threshold": threshold,
        "train_out_of_fold": measure(train.data.y, oof, threshold),
        "test": {m.name: measure(m.y, scores[m.rows], threshold) for m in mappings},
        "fitted": _plain(getattr(variant, "fitted", {})),
        "seconds": {
            "out_of_fold": round(oof_s, 1),
            "fit_and_score": round(time.perf_counter() - started - oof_s, 1),
        },
        "scores": scores,
    }


def near_copies(train_texts: Sequence[str], test_texts: Sequence[str]) -> np.ndarray:
    """Per test row: whether its near-duplicate group (computed over both) holds a
    training row."""
    groups = near_duplicate_groups([*train_texts, *test_texts])
    n = len(train_texts)
    return np.isin(groups[n:], groups[:n])


def train_test_evaluate(
    train: Split,
    test: Split,
    mappings: Sequence[LabelMapping],
    variants: Mapping[str, Callable[[], Variant]],
    *,
    folds: int = 5,
    seed: int = 13,
    threshold_rule: Mapping[str, float] | None = None,
    on_variant: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every variant through the protocol. Returns the report and each variant's test
    scores (row by row, the test file's order)."""
    rule = dict(threshold_rule or {})
    copies = near_copies(train.data.texts, test.data.texts)
    report: dict[str, Any] = {
        "train": {
            "messages": len(train.data.y),
            "fraud": int(train.data.y.sum()),
            "duplicates_removed": train.data.duplicates_removed,
            "near_duplicate_groups": int(len(np.unique(train.data.groups))),
        },
        "test": {
            "messages": len(test.data.texts),
            "near_copies_of_training": {
                m.name: {
                    "fraud": int(copies[m.rows][m.y].sum()),
                    "legit": int(copies[m.rows][~m.y].sum()),
                }
                for m in mappings
            },
        },
        "protocol": {
            "folds": folds,
            "seed": seed,
            "grouped_by": "near-duplicate groups",
            "threshold_rule": rule or {"max": "f1"},
        },
        "variants": {},
    }
    scores: dict[str, np.ndarray] = {}
    for name, make in variants.items():
        if on_variant:
            on_variant(name)
        result = train_test_variant(
            make, train, test, mappings, folds=folds, seed=seed, threshold_rule=rule
        )
        scores[name] = result.pop("scores")
        report["variants"][name] = result
    return report, scores


def _plain(value: Any) -> Any:
    """Fitted parameters as JSON takes them (arrays and tuples to lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
