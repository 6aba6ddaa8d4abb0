"""The approximate (ivf) index type: same answers as exact search on easy data, changes by
id, and the manifest recording what was built."""

import json

import numpy as np
import pytest

from fraud.datasets import LabeledText
from fraud.index import MANIFEST_FILE, IndexSpec, Reference, ReferenceIndex

DIM = 16
IVF = IndexSpec(type="ivf", nlist=8, nprobe=4, min_size=100)


def _clustered(n: int, seed: int = 0, centers: int = 8) -> np.ndarray:
    """Unit vectors in well separated clusters: easy data, where ivf must agree with flat."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, DIM))
    x = means[rng.integers(0, centers, n)] + 0.05 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _items(n: int) -> list[LabeledText]:
    return [
        LabeledText(f"m{i}", "fraud", "phishing")
        if i % 3 == 0
        else LabeledText(f"m{i}", "legit", None)
        for i in range(n)
    ]


def _build(spec: IndexSpec, vectors: np.ndarray) -> ReferenceIndex:
    index = ReferenceIndex("test-model", DIM, {"top_k": 4}, spec)
    index.add(_items(len(vectors)), vectors, "unit-test")
    return index


def test_ivf_gives_the_same_top1_as_exact_search_on_easy_data():
    vectors = _clustered(400)
    flat, ivf = _build(IndexSpec(), vectors), _build(IVF, vectors)
    assert flat.index_type == "flat" and ivf.index_type == "ivf"
    queries = vectors[:50] + 0.01 * np.random.default_rng(1).standard_normal((50, DIM))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    a, b = flat.search(queries, 5), ivf.search(queries, 5)
    assert (a.ids[:, 0] == b.ids[:, 0]).all()
    assert b.similarities[:, 0] == pytest.approx(a.similarities[:, 0], abs=1e-5)
    assert (a.is_fraud[:, 0] == b.is_fraud[:, 0]).all()


def test_ivf_stays_flat_until_it_holds_min_size_references():
    vectors = _clustered(150)
    index = ReferenceIndex("test-model", DIM, None, IVF)
    index.add(_items(99), vectors[:99], "a")
    assert index.index_type == "flat"  # a small or empty bank: exact search
    v = vectors[99:100]
    index.upsert(Reference(99, "m99", "fraud", "phishing", "feedback"), v)  # the 100th
    assert index.index_type == "ivf" and index.index_params()["nlist"] == 8
    assert index.search(v, 1).ids[0, 0] == 99


def test_upsert_and_remove_by_id_on_ivf():
    vectors = _clustered(300)
    index = _build(IVF, vectors)
    assert index.index_type == "ivf"
    removed = [3, 10, 42]
    for ref_id in removed:
        assert index.remove(ref_id)
    assert not index.remove(3)
    keys = index.search(vectors, 8)
    assert not np.isin(keys.ids, removed).any()  # a removed reference is never a key
    # Re-added under its id with a new vector and label: found, and stored exactly.
    new = _clustered(1, seed=5)
    index.upsert(Reference(42, "back", "fraud", "lottery", "feedback"), new)
    keys = index.search(new, 1)
    assert keys.ids[0, 0] == 42 and keys.is_fraud[0, 0]
    assert index.categories[keys.category_codes[0, 0]] == "lottery"
    assert np.array_equal(index.key_vectors(np.array([42, 7])), np.stack([new[0], vectors[7]]))
    # A replace (relabel with a new vector) leaves one copy of the id.
    index.upsert(Reference(7, "m7", "legit", None, "feedback"), vectors[8:9])
    assert (index.search(vectors[8:9], 20).ids[0] == 7).sum() == 1
    ids, stored = index.vectors()
    assert len(ids) == len(index) == 298 and 3 not in ids and 42 in ids
    assert np.array_equal(stored[ids.tolist().index(42)], new[0])


def test_manifest_records_type_and_params_and_round_trips(tmp_path):
    vectors = _clustered(300)
    index = _build(IVF, vectors)
    index.save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["index"]["type"] == "ivf"
    assert manifest["index"]["params"]["nlist"] == 8 and manifest["index"]["params"]["nprobe"] == 4
    assert manifest["index"]["spec"] == {
        "type": "ivf",
        "nlist": 8,
        "nprobe": 4,
        "min_size": 100,
        "train_per_list": 32,
    }
    assert manifest["index_type"].startswith("IndexIVFFlat(nlist=8")
    loaded = ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)
    assert loaded.index_spec == IVF and loaded.index_type == "ivf"
    assert loaded.index_params() == index.index_params()
    assert loaded.version == index.version
    a, b = index.search(vectors, 5), loaded.search(vectors, 5)
    assert (a.ids == b.ids).all()
    # Changes keep working after a load (direct map restored), and survive another save.
    assert loaded.remove(0)
    loaded.upsert(Reference(500, "new", "fraud", "phishing", "x"), vectors[:1])
    loaded.save(tmp_path)
    again = ReferenceIndex.load(tmp_path, model="test-model", dim=DIM)
    assert again.search(vectors[:1], 1).ids[0, 0] == 500 and 0 not in again


def test_flat_manifest_records_flat(tmp_path):
    _build(IndexSpec(), _clustered(20)).save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["index"] == {"type": "flat", "params": {}, "spec": manifest["index"]["spec"]}
    assert manifest["index"]["spec"]["type"] == "flat"
    assert manifest["index_type"] == "IndexIDMap2(IndexFlatIP)"


def test_invalid_spec_is_refused():
    with pytest.raises(ValueError, match="index type"):
        IndexSpec(type="hnsw")
    with pytest.raises(ValueError, match="nlist"):
        IndexSpec(type="ivf", nlist=0)


def test_auto_nlist_grows_with_the_bank():
    spec = IndexSpec(type="ivf")
    assert [spec.nlist_for(n) for n in (10_000, 100_000, 1_000_000)] == [32, 512, 4096]


def test_build_index_takes_the_spec(tmp_path):
    from fraud.index import build_index

    class FakeEncoder:
        name, dim = "test-model", DIM

        def encode(self, texts, progress=None):
            return _clustered(len(texts), seed=3)

    index = build_index(FakeEncoder(), _items(200), "csv", {}, progress=False, index_spec=IVF)
    assert index.index_type == "ivf" and len(index) == 200
    index.save(tmp_path)
    assert ReferenceIndex.load(tmp_path, model="test-model", dim=DIM).index_type == "ivf"
