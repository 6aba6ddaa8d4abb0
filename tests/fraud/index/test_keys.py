"""Keys and the category codebook (fraud/index/keys.py), and attaching vectors to keys."""

import numpy as np
import pytest

from fraud.datasets import LabeledText
from fraud.index import UNSPECIFIED, Categories, Keys, ReferenceIndex
from tests.fakes import unit_vectors

DIM = 4


def _keys(n: int, m: int, start: int = 0, vectors: bool = False) -> Keys:
    ids = np.arange(start, start + n * m, dtype=np.int64).reshape(n, m)
    return Keys(
        similarities=np.full((n, m), 0.5, np.float32),
        ids=ids,
        valid=np.ones((n, m), bool),
        is_fraud=np.ones((n, m), bool),
        category_codes=np.ones((n, m), np.int64),
        log_weights=np.zeros((n, m), np.float32),
        vectors=np.ones((n, m, DIM), np.float32) if vectors else None,
    )


def test_concat_puts_the_second_keys_after_the_first_row_by_row_and_changes_neither():
    a, b = _keys(2, 3, vectors=True), _keys(2, 1, start=100, vectors=True)
    a_ids, b_ids = a.ids.copy(), b.ids.copy()
    joined = Keys.concat(a, b)
    assert joined.shape == (2, 4)
    assert joined.ids.tolist() == [[0, 1, 2, 100], [3, 4, 5, 101]]
    assert joined.vectors.shape == (2, 4, DIM)
    assert joined.message_ids is None  # neither came from a history
    assert np.array_equal(a.ids, a_ids) and np.array_equal(b.ids, b_ids)
    assert a.vectors.shape == (2, 3, DIM)


def test_concat_refuses_keys_of_which_only_one_side_has_vectors():
    with pytest.raises(ValueError, match="attach_vectors"):
        Keys.concat(_keys(1, 2), _keys(1, 1, vectors=True))


def test_concat_keeps_history_message_ids_and_fills_none_for_bank_keys():
    history = _keys(1, 1, vectors=True)
    history = Keys(**{**history.__dict__, "message_ids": np.array([["m7"]], object)})
    joined = Keys.concat(_keys(1, 2, vectors=True), history)
    assert joined.message_ids.tolist() == [[None, None, "m7"]]


def test_the_codebook_reserves_unspecified_and_only_grows_by_add():
    categories = Categories(["delivery", None, "lottery", "delivery"])
    assert list(categories) == [UNSPECIFIED, "delivery", "lottery"]
    assert categories.code("lottery") == 2 and categories[2] == "lottery"
    assert categories.code("never seen") == 0 and categories.code(None) == 0
    assert len(categories) == 3 and "never seen" not in categories  # a lookup adds nothing
    assert categories.add("bank") == 3 and categories[3] == "bank"


def test_attach_vectors_gives_each_key_its_reference_embedding():
    vectors = unit_vectors(3, DIM, seed=1)
    index = ReferenceIndex("m", DIM)
    index.add([LabeledText(f"t{i}", "fraud", "x") for i in range(3)], vectors, "t")
    keys = index.search(vectors[:2], 3)
    attached = index.attach_vectors(keys)
    assert keys.vectors is None and attached.vectors.shape == (2, 3, DIM)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(attached.vectors[i, j], vectors[keys.ids[i, j]], atol=1e-6)
    assert index.attach_vectors(attached) is attached  # already attached: as it is
