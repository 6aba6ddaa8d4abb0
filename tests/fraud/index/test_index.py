import json

import numpy as np
import pytest

from fraud.datasets import LabeledText
from fraud.errors import DataError, IndexMismatchError
from fraud.index import MANIFEST_FILE, Reference, ReferenceIndex
from tests.fakes import unit_vectors

DIM = 16


def _items(n: int, fraud_every: int = 2) -> list[LabeledText]:
    return [
        LabeledText(f"message {i}", "fraud", ["phishing", "lottery"][(i // 2) % 2])
        if i % fraud_every == 0
        else LabeledText(f"message {i}", "legit", None)
        for i in range(n)
    ]


def _index(n: int = 10) -> tuple[ReferenceIndex, np.ndarray]:
    index = ReferenceIndex("test-model", DIM, {"top_k": 4})
    vectors = unit_vectors(n, DIM)
    index.add(_items(n), vectors, "unit-test")
    return index, vectors


def test_search_finds_each_vector_first_with_its_labels():
    index, vectors = _index(10)
    keys = index.search(vectors, 3)
    assert keys.ids[:, 0].tolist() == list(range(10))
    assert keys.similarities[:, 0] == pytest.approx(np.ones(10), abs=1e-5)
    assert keys.is_fraud[:, 0].tolist() == [i % 2 == 0 for i in range(10)]
    fraud_rows = keys.is_fraud[:, 0]
    names = [index.categories[c] for c in keys.category_codes[fraud_rows, 0]]
    assert names == ["phishing", "lottery", "phishing", "lottery", "phishing"]


def test_round_trip_keeps_references_results_and_version(tmp_path):
    index, vectors = _index(10)
    index.save(tmp_path)
    loaded = ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)
    assert len(loaded) == 10
    assert loaded.version == index.version
    assert loaded.reference(3) == index.reference(3)
    assert loaded.scorer_params == {"top_k": 4}
    a, b = index.search(vectors, 5), loaded.search(vectors, 5)
    assert (a.ids == b.ids).all() and (a.is_fraud == b.is_fraud).all()
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["counts"] == {
        "total": 10,
        "fraud": 5,
        "legit": 5,
        "disabled": 0,
        "fraud_by_category": {"lottery": 2, "phishing": 3},
    }
    assert manifest["model"] == "test-model" and manifest["dim"] == DIM


def test_metadata_is_json_lines_not_pickle(tmp_path):
    index, _ = _index(4)
    index.save(tmp_path)
    lines = (tmp_path / "references.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [f"message {i}" for i in range(4)]


@pytest.mark.parametrize(("model", "dim"), [("other-model", DIM), ("test-model", 32)])
def test_loading_with_another_encoder_is_refused_in_one_line(tmp_path, model, dim):
    _index(4)[0].save(tmp_path)
    with pytest.raises(IndexMismatchError) as err:
        ReferenceIndex.load(tmp_path, model=model, dim=dim)
    message = str(err.value)
    assert "\n" not in message and "fraud index build" in message and "test-model" in message


def test_not_an_index_directory(tmp_path):
    with pytest.raises(DataError, match="not an index directory"):
        ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)


def test_version_changes_when_references_change():
    index, _ = _index(4)
    before = index.version
    index.add([LabeledText("new scam", "fraud", "delivery")], unit_vectors(1, DIM, 9), "added")
    assert index.version != before
    assert index.reference(4).category == "delivery"


def test_fewer_references_than_k_and_empty_index():
    index, vectors = _index(3)
    keys = index.search(vectors[:2], 32)
    assert keys.ids.shape == (2, 3) and keys.valid.all()
    empty = ReferenceIndex("test-model", DIM)
    keys = empty.search(vectors[:2], 32)
    assert keys.ids.shape == (2, 0) and keys.similarities.shape == (2, 0)


def test_wrong_shape_is_a_type_error_naming_the_array():
    index, _ = _index(2)
    with pytest.raises(TypeError, match=r"queries must be an \(n, 16\) array"):
        index.search(np.zeros((2, 8), np.float32), 1)


def test_excluded_ids_are_never_keys_for_their_own_query():
    index, vectors = _index(10)
    keys = index.search(vectors, 3, exclude_ids=np.arange(10))
    assert keys.ids.shape == (10, 3)
    assert not (keys.ids == np.arange(10)[:, None]).any()
    plain = index.search(vectors, 4)
    assert (keys.ids == plain.ids[:, 1:]).all()  # the rest keep their order
    none_excluded = index.search(vectors, 3, exclude_ids=np.full(10, -1))
    assert (none_excluded.ids == plain.ids[:, :3]).all()


def test_vectors_come_back_with_their_ids():
    index, vectors = _index(5)
    ids, stored = index.vectors()
    assert ids.tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(stored, vectors)


def test_embedding_skips_texts_already_indexed_after_normalization():
    from fraud.index import embed_into

    class FakeEncoder:
        def encode(self, texts, progress=None):
            return unit_vectors(len(texts), DIM, seed=len(texts))

    index = ReferenceIndex("test-model", DIM)
    first = [LabeledText("Win a prize", "fraud", "lottery"), LabeledText("hi", "legit", None)]
    assert embed_into(index, FakeEncoder(), first, "a", progress=False) == [0, 1]
    again = [
        LabeledText("Win  a\u200b prize ", "fraud", "lottery"),  # the same after normalization
        LabeledText("new scam", "fraud", "delivery"),
        LabeledText("new scam", "fraud", "delivery"),
    ]
    assert embed_into(index, FakeEncoder(), again, "b", progress=False) == [2]
    assert len(index) == 3


def test_a_reference_weight_reaches_search_and_survives_a_change(tmp_path):
    index = ReferenceIndex("m", 4)
    v = np.eye(4, dtype=np.float32)
    index.upsert(Reference(7, "t", "fraud", "phishing", "s", weight=2.0), v[:1])
    assert index.search(v[:1], 1).log_weights[0, 0] == pytest.approx(np.log(2.0))
    index.upsert(Reference(7, "t", "fraud", "phishing", "s", weight=0.5), v[:1])
    index.save(tmp_path)
    loaded = ReferenceIndex.load(tmp_path, model="m", dim=4)
    assert loaded.search(v[:1], 1).log_weights[0, 0] == pytest.approx(np.log(0.5))
    with pytest.raises(ValueError, match="weight"):
        Reference(8, "t", "fraud", "phishing", "s", weight=0.0)


def test_an_index_directory_of_the_old_format_loads_as_flat(tmp_path):
    """Directories written before index types: no "index" entry in the manifest."""
    index, vectors = _index(6)
    index.save(tmp_path)
    path = tmp_path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["index"]
    path.write_text(json.dumps(manifest))
    loaded = ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)
    assert loaded.index_type == "flat" and loaded.index_spec.type == "flat"
    assert loaded.search(vectors, 1).ids[:, 0].tolist() == list(range(6))
    assert loaded.manifest()["index"]["type"] == "flat"
    loaded.upsert(Reference(9, "t", "legit", None, "s"), vectors[:1])
    assert loaded.remove(0) and 0 not in loaded.search(vectors, 3).ids


@pytest.mark.parametrize("name", ["index.faiss", "references.jsonl"])
def test_a_file_changed_after_saving_is_refused(tmp_path, name):
    index, _ = _index(6)
    index.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["files"].keys() == {
        "index.faiss",
        "references.jsonl",
    }
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{name}: its SHA-256 does not match"):
        ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)


def test_a_manifest_without_digests_is_refused(tmp_path):
    index, _ = _index(6)
    index.save(tmp_path)
    path = tmp_path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["files"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="no file digests"):
        ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)
