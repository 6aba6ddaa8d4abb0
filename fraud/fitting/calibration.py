"""Fitting the attention scorer's T and tau (and the key similarity's n-gram term), and
choosing an alert threshold.

All work on training data only: the caller hands in keys retrieved for training
messages with each message masked out of its own keys.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize

from fraud.scoring.attention import attend
from fraud.text.ngrams import mix

# What fit_key_similarity tries: n-gram lengths and weights of the n-gram term.
NGRAM_RANGES = ((1, 1), (1, 2), (1, 3), (2, 4), (3, 5))
NGRAM_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

_EPS = 1e-7


def attention_fraud_scores(
    sims: np.ndarray, valid: np.ndarray, is_fraud: np.ndarray, temperature: float, tau: float
) -> np.ndarray:
    return attend(sims, valid, is_fraud, temperature=temperature, null_similarity=tau).fraud_score


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature_and_null(
    sims: np.ndarray, valid: np.ndarray, is_fraud: np.ndarray, y: np.ndarray
) -> tuple[float, float, float]:
    """(T, tau, log-loss) minimizing the log-loss of the attention fraud score.

    A coarse grid picks the start (the loss is not convex in T), then L-BFGS-B refines
    log T and tau within T in [0.005, 2], tau in [-1, 1].
    """
    y = np.asarray(y, dtype=np.float64)

    def loss(theta: np.ndarray) -> float:
        return log_loss(
            y, attention_fraud_scores(sims, valid, is_fraud, np.exp(theta[0]), theta[1])
        )

    grid = [
        (np.log(t), tau)
        for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
        for tau in np.linspace(-0.2, 0.9, 12)
    ]
    start = min(grid, key=lambda th: loss(np.array(th)))
    result = minimize(
        loss,
        np.array(start),
        method="L-BFGS-B",
        bounds=[(np.log(0.005), np.log(2.0)), (-1.0, 1.0)],
    )
    return float(np.exp(result.x[0])), float(result.x[1]), float(result.fun)


def fit_key_similarity(
    index,
    keys,
    texts: Sequence[str],
    y: np.ndarray,
    ranges: Sequence[tuple[int, int]] = NGRAM_RANGES,
    weights: Sequence[float] = NGRAM_WEIGHTS,
) -> dict[str, Any]:
    """The n-gram term's weight and range, with T and tau, of least log-loss.

    keys: the training messages' keys from `index` with dense similarities (each message
    masked out of its own), texts their texts. Every (range, weight) is fitted like T and
    tau alone (fit_temperature_and_null), with weight 0 (no term) among the candidates,
    so the term is only taken where it lowers the loss on the training data.
    """
    t, tau, loss = fit_temperature_and_null(keys.similarities, keys.valid, keys.is_fraud, y)
    best = {
        "ngram_weight": 0.0,
        "ngram_range": tuple(ranges[0]) if ranges else (1, 3),
        "temperature": t,
        "null_similarity": tau,
        "log_loss": loss,
    }
    ids = np.where(keys.valid, keys.ids, -1)
    for ngram_range in ranges:
        ngram = index.ngram_similarities(texts, ids, ngram_range)
        for w in weights:
            sims = mix(keys.similarities, ngram, w)
            t, tau, loss = fit_temperature_and_null(sims, keys.valid, keys.is_fraud, y)
            if loss < best["log_loss"]:
                best = {
                    "ngram_weight": float(w),
                    "ngram_range": tuple(ngram_range),
                    "temperature": t,
                    "null_similarity": tau,
                    "log_loss": loss,
                }
    return best


def choose_threshold(
    scores: np.ndarray,
    y: np.ndarray,
    *,
    target_precision: float | None = None,
    target_fpr: float | None = None,
) -> float:
    """The alert threshold: best F1 by default; or the lowest threshold (most recall) whose
    precision is >= target_precision, or whose false-positive rate is <= target_fpr."""
    if target_precision is not None and target_fpr is not None:
        raise ValueError("give a target precision or a target false-positive rate, not both")
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y, dtype=bool)
    if not y.any() or y.all():
        raise ValueError("choosing a threshold needs both labels in the data")
    order = np.argsort(-scores, kind="stable")
    s, labels = scores[order], y[order]
    tp, fp = np.cumsum(labels), np.cumsum(~labels)
    # Candidate thresholds: each distinct score (alert when score >= it).
    last = np.r_[s[1:] != s[:-1], True]
    s, tp, fp = s[last], tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / labels.sum()
    fpr = fp / (~labels).sum()
    if target_precision is not None:
        ok = precision >= target_precision
    elif target_fpr is not None:
        ok = fpr <= target_fpr
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, _EPS)
        return float(s[int(np.argmax(f1))])
    if not ok.any():
        return float(s[0] + _EPS)  # nothing reaches the target: alert on nothing seen
    return float(s[np.flatnonzero(ok).max()])
