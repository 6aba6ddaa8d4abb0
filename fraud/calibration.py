"""Fitting the attention scorer's T and tau, and choosing an alert threshold.

Both work on training data only: the caller hands in keys retrieved for training
messages with each message masked out of its own keys.
"""

import numpy as np
from scipy.optimize import minimize

from fraud.scorer import attend

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
