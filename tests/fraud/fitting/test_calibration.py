import numpy as np
import pytest

from fraud.fitting.calibration import (
    attention_fraud_scores,
    choose_threshold,
    fit_temperature_and_null,
)


def test_fit_recovers_known_temperature_and_null_similarity():
    # Labels drawn from the attention score itself with T = 0.08, tau = 0.55: the
    # maximum-likelihood fit must land near them.
    rng = np.random.default_rng(0)
    n, m = 6000, 16
    sims = rng.uniform(0.0, 0.9, size=(n, m))
    valid = np.ones((n, m), bool)
    valid[:, 12:] = rng.random((n, 4)) < 0.5  # some messages have fewer keys
    is_fraud = rng.random((n, m)) < 0.4
    p = attention_fraud_scores(sims, valid, is_fraud, 0.08, 0.55)
    y = rng.random(n) < p
    t, tau, loss = fit_temperature_and_null(sims, valid, is_fraud, y)
    assert t == pytest.approx(0.08, rel=0.15)
    assert tau == pytest.approx(0.55, abs=0.04)
    assert loss < 0.7


def test_threshold_maximizes_f1_by_default():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    # >= 0.6 catches all 4 frauds with 1 false alarm: F1 8/9, the best cut.
    assert choose_threshold(scores, y) == 0.6


def test_threshold_for_a_target_precision_or_false_positive_rate():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    assert choose_threshold(scores, y, target_precision=1.0) == 0.8  # lowest at precision 1
    assert choose_threshold(scores, y, target_precision=0.8) == 0.6
    assert choose_threshold(scores, y, target_fpr=0.0) == 0.8
    assert choose_threshold(scores, y, target_fpr=0.25) == 0.6
    with pytest.raises(ValueError, match="not both"):
        choose_threshold(scores, y, target_precision=0.9, target_fpr=0.1)


def test_an_unreachable_target_alerts_on_nothing_seen():
    scores, y = np.array([0.9, 0.5, 0.1]), np.array([0, 1, 0], bool)
    assert choose_threshold(scores, y, target_precision=1.0) > 0.9
