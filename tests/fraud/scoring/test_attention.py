import math

import numpy as np
import pytest

from fraud.scoring.attention import attend, category_mass, top_evidence


def _attend(sims, valid=None, fraud=None, temperature=0.1, tau=0.5):
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float64))
    valid = np.ones_like(sims, bool) if valid is None else np.atleast_2d(valid)
    fraud = np.ones_like(sims, bool) if fraud is None else np.atleast_2d(fraud)
    return attend(sims, valid, fraud, temperature=temperature, null_similarity=tau)


def test_one_fraud_key_against_the_null_key_by_hand():
    # weights: e^(0.8/0.1) and e^(0.5/0.1) for the null key -> score = 1 / (1 + e^-3)
    att = _attend([0.8])
    expected = 1 / (1 + math.exp(-3))
    assert att.fraud_score[0] == pytest.approx(expected)
    assert att.null_weight[0] == pytest.approx(1 - expected)


def test_null_key_keeps_a_far_message_low_in_a_fraud_only_index():
    near, far = _attend([0.9, 0.85, 0.8]), _attend([0.1, 0.05, 0.0])
    assert near.fraud_score[0] > 0.9
    # e^1 + e^0.5 + e^0 against e^5: about 0.035, though every key is a fraud
    assert far.fraud_score[0] < 0.05


def test_legit_keys_take_attention_away_from_fraud_keys():
    # Two equally similar keys, one fraud, one legit: the fraud gets half of what's left.
    att = _attend([0.9, 0.9], fraud=[True, False])
    assert att.fraud_score[0] == pytest.approx(att.weights[0, 1])
    assert att.weights[0].sum() + att.null_weight[0] == pytest.approx(1.0)


def test_category_mass_sums_per_category_and_to_the_score():
    sims = [0.9, 0.8, 0.7, 0.6]
    cats = [0, 1, 1, 0]
    fraud = [True, True, True, False]  # the last key is legit: no category mass
    att = _attend(sims, fraud=fraud)
    w = att.weights[0]
    mass = category_mass(att.weights, np.array([fraud]), np.array([cats]), 2)
    assert mass[0, 0] == pytest.approx(w[0])
    assert mass[0, 1] == pytest.approx(w[1] + w[2])
    assert mass[0].sum() == pytest.approx(att.fraud_score[0])


def test_fewer_references_than_k_are_masked_out():
    valid = [True, True, False, False]
    full = _attend([0.9, 0.7, 0.0, 0.0], valid=valid)
    only_two = _attend([0.9, 0.7])
    assert full.weights[0, 2:].tolist() == [0.0, 0.0]
    assert full.fraud_score[0] == pytest.approx(only_two.fraud_score[0])


def test_empty_index_gives_all_attention_to_the_null_key():
    att = attend(
        np.zeros((3, 0)),
        np.zeros((3, 0), bool),
        np.zeros((3, 0), bool),
        temperature=0.05,
        null_similarity=0.5,
    )
    assert att.fraud_score.tolist() == [0.0, 0.0, 0.0]
    assert att.null_weight.tolist() == [1.0, 1.0, 1.0]


def test_batch_rows_are_independent():
    a, b = _attend([0.9, 0.2]), _attend([0.3, 0.1])
    both = _attend([[0.9, 0.2], [0.3, 0.1]])
    assert both.fraud_score.tolist() == pytest.approx([a.fraud_score[0], b.fraud_score[0]])


def test_extreme_similarities_do_not_overflow():
    att = _attend([1.0, -1.0], temperature=1e-4, tau=0.0)
    assert np.isfinite(att.weights).all()
    assert att.fraud_score[0] == pytest.approx(1.0)


def test_top_evidence_orders_by_weight_among_eligible_keys():
    weights = np.array([[0.1, 0.5, 0.3, 0.05]])
    eligible = np.array([[True, False, True, True]])
    assert top_evidence(weights, eligible, 2) == [[2, 0]]
    assert top_evidence(weights, eligible, 10) == [[2, 0, 3]]
    assert top_evidence(weights, eligible, 0) == [[]]


def test_a_key_weight_multiplies_its_attention_against_the_others():
    sims = np.array([[0.7, 0.7]])
    valid = np.ones((1, 2), bool)
    plain = attend(sims, valid, valid, temperature=0.1, null_similarity=0.5)
    weighted = attend(
        sims,
        valid,
        valid,
        temperature=0.1,
        null_similarity=0.5,
        log_weights=np.log(np.array([[3.0, 1.0]])),
    )
    assert plain.weights[0, 0] == pytest.approx(plain.weights[0, 1])
    assert weighted.weights[0, 0] / weighted.weights[0, 1] == pytest.approx(3.0)
    assert weighted.fraud_score[0] > plain.fraud_score[0]  # less left for the null key
