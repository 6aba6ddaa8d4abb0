"""Fine-tuning the English encoder's adapters (fraud/fitting/adapt.py)."""

import numpy as np
import pytest

from fraud.data import seed_references_path
from fraud.datasets import LabeledText, read_labeled_csv
from fraud.encoding.routed import is_other_script
from fraud.fitting.adapt import AdaptConfig, PairSampler, adapt_encoder, training_rows
from fraud.text.normalize import normalize


def _rows():
    fraud = [LabeledText(f"fraud {i}", "fraud", "parcel" if i < 4 else "bank") for i in range(8)]
    legit = [LabeledText(f"legit {i}", "legit", None) for i in range(8)]
    return fraud + legit


def test_a_step_has_a_quarter_of_each_positive_and_half_negatives_with_look_alikes():
    rows = _rows()
    X = np.eye(16, dtype=np.float32)
    X[8:] = X[:8]  # legit i is fraud i's look-alike
    sampler = PairSampler(rows, X, AdaptConfig(hard_negative=1.0, look_alikes=1))
    pairs, targets = sampler.pairs()
    assert len(pairs) == 16 and targets == [1.0] * 8 + [0.0] * 8
    is_fraud = [r.label == "fraud" for r in rows]
    assert all(is_fraud[a] and is_fraud[b] for a, b in pairs[:4])
    assert all(not is_fraud[a] and not is_fraud[b] for a, b in pairs[4:8])
    assert all(is_fraud[a] and not is_fraud[b] for a, b in pairs[8:])
    assert all(b == a + 8 for a, b in pairs[8:])  # each fraud meets its look-alike


def test_too_few_rows_of_a_class_is_a_clear_error():
    rows = _rows()[:9]
    with pytest.raises(ValueError, match="two fraud and two legit"):
        PairSampler(rows, np.eye(9, dtype=np.float32), AdaptConfig())


def test_training_rows_are_latin_script_and_unique_after_normalization():
    rows = training_rows()
    assert len(rows) > 5000 and sum(r.label == "fraud" for r in rows) > 800
    assert not any(is_other_script(r.text) for r in rows)  # those go to the multilingual model
    seed = read_labeled_csv(seed_references_path())
    chinese = [r for r in seed if is_other_script(r.text)]
    assert chinese and not {r.text for r in chinese} & {r.text for r in rows}
    assert len({normalize(r.text) for r in rows}) == len(rows)


@pytest.mark.model
def test_a_few_steps_train_the_adapters_and_leave_the_base_alone():
    from fraud.encoding.bundled import bundled_model_path

    rows = _rows()
    X = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    delta, summary = adapt_encoder(bundled_model_path(), rows, X, AdaptConfig(steps=3))
    assert len(delta) == 6 * 2 * 2  # six layers, query and value, A and B
    b = delta["encoder.layer.0.attention.self.query.B"]
    assert b.shape == (384, 8) and float(b.abs().max()) > 0  # B starts at zero
    assert summary["rows"] == 16 and summary["fraud_rows"] == 8
