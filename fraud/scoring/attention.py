"""The attention scorer: pure numpy, vectorized over a batch, no Python loop over keys.

For a message with embedding q and retrieved references (keys) k_1..k_m with
similarities s_i = q . k_i, the attention weights are

    a = softmax([s_1 / T, ..., s_m / T, tau / T])

where the last entry is a "null" key of similarity tau whose value is *legit*. A key
with a weight w_i other than 1 (a reference's weight, or the weight of keys from the
recipient's history) gets s_i / T + log w_i. The null key's job: a message that is far
from every known fraud (all s_i well below tau) gives most of its attention to it and
scores low, even when the index holds frauds only. The values are one-hot labels, so

    fraud score            = sum_i a_i [reference i is fraud]
    category distribution  = sum_i a_i over the fraud references of each category

and the two agree: the distribution (`category_mass`) sums to the fraud score.
Missing keys (an index with fewer than k references, or an empty one) are masked out and
get zero weight.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Attention:
    """The attention of a batch of n messages over m keys each (m may be 0)."""

    weights: np.ndarray  # (n, m) float64, 0 where the key is missing
    null_weight: np.ndarray  # (n,)
    fraud_score: np.ndarray  # (n,) in [0, 1]


def attend(
    similarities: np.ndarray,
    valid: np.ndarray,
    is_fraud: np.ndarray,
    *,
    temperature: float,
    null_similarity: float,
    log_weights: np.ndarray | None = None,
) -> Attention:
    """Attention over retrieved keys plus the null key.

    similarities, valid, is_fraud: (n, m) arrays aligned key by key; `valid` is False
    where no reference was found.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2 or sims.shape != valid.shape:
        raise ValueError(f"similarities {sims.shape} and valid {valid.shape} must be equal (n, m)")
    n, m = sims.shape
    logits = sims / temperature
    if log_weights is not None:
        logits = logits + log_weights
    logits = np.where(valid, logits, -np.inf)
    null_logit = np.full((n, 1), null_similarity / temperature)
    all_logits = np.concatenate([logits, null_logit], axis=1)
    # The null key is always present, so each row's max is finite: a stable softmax.
    shifted = np.exp(all_logits - all_logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    weights, null_weight = probs[:, :m], probs[:, m]

    fraud_score = np.where(valid & is_fraud, weights, 0.0).sum(axis=1)
    return Attention(weights=weights, null_weight=null_weight, fraud_score=fraud_score)


def category_mass(
    weights: np.ndarray, is_fraud_key: np.ndarray, category_codes: np.ndarray, n_categories: int
) -> np.ndarray:
    """(n, n_categories): the attention weight of the fraud keys of each category, summed.

    is_fraud_key: (n, m), True where the key is a valid fraud reference; category_codes
    index 0..n_categories-1 and are ignored elsewhere.
    """
    n, m = weights.shape
    mass = np.zeros((n, n_categories), dtype=np.float64)
    if m and n_categories:
        rows = np.repeat(np.arange(n), m)
        codes = np.where(is_fraud_key, category_codes, 0).ravel()
        np.add.at(mass, (rows, codes), np.where(is_fraud_key, weights, 0.0).ravel())
    return mass


def top_evidence(weights: np.ndarray, eligible: np.ndarray, limit: int) -> list[list[int]]:
    """Per row, the column positions of the `limit` largest weights among eligible keys."""
    if limit <= 0 or weights.shape[1] == 0:
        return [[] for _ in range(weights.shape[0])]
    masked = np.where(eligible, weights, -1.0)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :limit]
    return [[int(j) for j in row if eligible[i, j]] for i, row in enumerate(order)]
