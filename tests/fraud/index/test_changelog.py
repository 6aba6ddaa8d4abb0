import numpy as np
import pytest

from fraud.errors import SchemaError
from fraud.index import Reference, ReferenceIndex
from fraud.index.changelog import (
    apply_change,
    change_key,
    changed_upsert,
    decode_change,
    encode_upsert,
)
from tests.fakes import unit_vectors

DIM = 8


def test_upsert_round_trips_through_bytes_and_a_tombstone_removes():
    ref = Reference(42, "pay the £2 fee", "fraud", "delivery", "analyst:ana")
    vector = unit_vectors(1, DIM)[0]
    change = decode_change(change_key(42), encode_upsert(ref, vector, "m"))
    assert change.reference == ref and change.model == "m"
    assert np.array_equal(change.vector, vector)
    gone = decode_change(b"42", None)
    assert gone.reference is None and gone.reference_id == 42


@pytest.mark.parametrize(("key", "value"), [(b"x", None), (b"1", b"{not json"), (b"2", b"{}")])
def test_bad_records_are_schema_errors(key, value):
    with pytest.raises(SchemaError):
        decode_change(key, value)


def test_changes_apply_incrementally_and_bump_the_version():
    index = ReferenceIndex("m", DIM)
    vectors = unit_vectors(3, DIM, seed=3)
    base = index.version
    for i in range(2):
        ref = Reference(i, f"scam {i}", "fraud", "lottery", "t")
        assert apply_change(
            index, decode_change(change_key(i), encode_upsert(ref, vectors[i], "m"))
        )
    assert index.version == f"{base}+2" and len(index) == 2
    # Relabel reference 1 as legit: replaced in place, searchable with its new label.
    relabel = Reference(1, "scam 1", "legit", None, "analyst:ana")
    assert (
        apply_change(index, decode_change(b"1", encode_upsert(relabel, vectors[1], "m")))
        == "upsert"
    )
    keys = index.search(vectors[1:2], 1)
    assert keys.ids[0, 0] == 1 and not keys.is_fraud[0, 0]
    assert apply_change(index, decode_change(b"0", None)) == "remove"
    assert apply_change(index, decode_change(b"0", None)) == "noop"
    assert index.search(vectors[:1], 5).ids[0].tolist() == [1]
    other = encode_upsert(Reference(5, "x", "fraud", "lottery", "t"), vectors[2], "other-model")
    assert apply_change(index, decode_change(b"5", other)).startswith("skipped")
    assert index.version == f"{base}+4"


def test_sparse_ids_from_feedback_are_looked_up_without_dense_tables():
    from fraud.scoring.verdicts import AnalystVerdict, reference_id_for, verdict_reference

    index = ReferenceIndex("m", DIM)
    vectors = unit_vectors(2, DIM, seed=5)
    verdict = AnalystVerdict(message_id="msg-9", verdict="fraud", category="Lottery", analyst="ana")
    ref = verdict_reference(verdict, "you won")
    assert ref.id == reference_id_for("msg-9") >= 2**40
    assert (ref.category, ref.changed_by, ref.source) == ("lottery", "ana", "feedback:msg-9")
    index.upsert(ref, vectors[0])
    index.upsert(Reference(3, "hi", "legit", None, "t"), vectors[1])
    keys = index.search(vectors, 2)
    assert keys.ids[0, 0] == ref.id and keys.is_fraud[0, 0]
    assert keys.ids[1, 0] == 3 and not keys.is_fraud[1, 0]
    assert index.categories[keys.category_codes[0, 0]] == "lottery"


def test_a_changed_upsert_keeps_the_vector_and_model_and_refuses_a_tombstone():
    vector = np.arange(4, dtype=np.float32)
    value = encode_upsert(Reference(3, "a scam", "fraud", "parcel", "seed"), vector, "m")
    changed = decode_change(b"3", changed_upsert(3, value, disabled=True, changed_by="ana"))
    assert changed.reference.disabled and changed.reference.changed_by == "ana"
    assert changed.reference.text == "a scam" and changed.model == "m"
    assert np.array_equal(changed.vector, vector)
    with pytest.raises(SchemaError):
        changed_upsert(3, None, disabled=True)
