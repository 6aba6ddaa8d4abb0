"""Fine-tuning the English encoder's adapters (fraud/fitting/adapt.py)."""

import numpy as np
import pytest

from fraud.data import seed_references_path
from fraud.datasets import LabeledText, read_labeled_csv
from fraud.encoding.routed import is_other_script
from fraud.fitting.adapt import (
    AdaptConfig,
    PairSampler,
    adapt_encoder,
    training_rows,
    with_code,
)
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


def test_codes_are_added_to_both_labels_so_they_carry_none():
    rows = _rows()
    X = np.eye(16, dtype=np.float32)
    plain = PairSampler(rows, X, AdaptConfig())
    pairs, _ = plain.pairs()
    texts = [r.text for r in rows]
    assert plain.texts(pairs, texts) == ([texts[i] for i, _ in pairs], [texts[j] for _, j in pairs])
    sampler = PairSampler(rows, X, AdaptConfig(token_augment=1.0, same_category=1.0))
    pairs, _ = sampler.pairs()
    first, second = sampler.texts(pairs, texts)
    for (i, j), a, b in zip(pairs[:4], first[:4], second[:4], strict=True):  # fraud/fraud
        assert rows[i].category == rows[j].category  # same_category=1: one category
        assert a == texts[i] and b.startswith(texts[j].split(" ")[0]) and b != texts[j]
    for (i, _), a, b in zip(pairs[4:8], first[4:8], second[4:8], strict=True):  # legit/legit
        assert a == texts[i] and b != a and set(a.split()) <= set(b.split())  # itself + a code
    for (i, j), a, b in zip(pairs[8:], first[8:], second[8:], strict=True):  # fraud/legit
        assert a != texts[i] and b != texts[j]


def test_a_code_is_a_word_of_its_own_and_reproducible():
    text = "Your table for two is booked for 7pm tonight"
    coded = [with_code(text, np.random.default_rng(s)) for s in range(20)]
    assert coded == [with_code(text, np.random.default_rng(s)) for s in range(20)]
    for c in coded:
        extra = [w for w in c.split() if w not in text.split()]
        assert 1 <= len(extra) <= 2 and 4 <= len(extra[-1]) <= 24
    assert any(not c.startswith(text) for c in coded)  # some inserted, not appended


def test_invariance_pairs_are_a_message_and_itself_with_a_code():
    rows = _rows()
    sampler = PairSampler(rows, np.eye(16, dtype=np.float32), AdaptConfig(invariance_pairs=4))
    pairs, targets = sampler.pairs()
    assert len(pairs) == 20 and targets[-4:] == [1.0] * 4
    assert all(i == j for i, j in pairs[-4:])
    texts = [r.text for r in rows]
    first, second = sampler.texts(pairs, texts)
    assert first[:16] == [texts[i] for i, _ in pairs[:16]]  # token_augment 0: the rest plain
    for (i, _), a, b in zip(pairs[-4:], first[-4:], second[-4:], strict=True):
        assert a == texts[i] and b != a and set(a.split()) <= set(b.split())
