import numpy as np
import pytest

from fraud.config import ScorerSettings
from fraud.datasets import LabeledText
from fraud.errors import DataError
from fraud.fitting import train_head
from fraud.index import ReferenceIndex
from fraud.index.files import write_index_dir
from fraud.scoring import HeadConfig, load_head
from fraud.scoring.detector import Detector
from tests.fakes import distinct_tail, unit_vectors

DIM = 16


def _trained(lexical: bool = False, query_terms: bool = False):
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.4
    X = unit_vectors(300, DIM, 2) + np.where(y[:, None], 0.9, 0.0) * np.eye(DIM)[0]
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    index = ReferenceIndex("m", DIM)
    # The texts carry the label too (in words), for the lexical term to find.
    texts = [
        f"{'claim your prize' if f else 'lunch at noon'} {distinct_tail(i)}"
        for i, f in enumerate(y)
    ]
    items = [
        LabeledText(t, "fraud", ["lottery", "delivery"][i % 2])
        if f
        else LabeledText(t, "legit", None)
        for i, (t, f) in enumerate(zip(texts, y, strict=True))
    ]
    ids = np.array(index.add(items, X, "t"))
    config = HeadConfig(
        dim=DIM, n_categories=2, top_k=8, epochs=15, lexical=lexical, query_terms=query_terms
    )
    keys = index.search(X, 8, exclude_ids=ids)
    return index, train_head(config, index, X, keys, texts, y), X, y, texts


@pytest.mark.parametrize("lexical", [False, True])
def test_the_head_learns_and_round_trips_through_safetensors(tmp_path, lexical):
    index, head, X, y, texts = _trained(lexical)
    keys = index.search(X, 8)
    scores, weights = head.score(index, X, keys, texts)
    assert ((scores >= 0.5) == y).mean() > 0.9
    assert weights.shape == (300, 8) and (weights >= 0).all() and (weights.sum(1) <= 1 + 1e-6).all()
    write_index_dir(tmp_path, index, head)
    loaded = load_head(tmp_path)
    # The index's categories when it was trained; code 0 is reserved (fraud/index/keys.py).
    assert loaded.categories == ["unspecified", "lottery", "delivery"]
    assert loaded.index_version == index.version
    assert (loaded.lexical is not None) == lexical
    assert np.allclose(loaded.score(index, X, keys, texts)[0], scores)
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob("*.pkl"))


@pytest.mark.parametrize("query_terms", [False, True])
def test_the_query_terms_are_learned_only_when_asked_for(query_terms):
    """Off (the default), the linear terms on the query embedding stay exactly zero and the
    head still learns from its keys; on, training moves them."""
    index, head, X, y, texts = _trained(query_terms=query_terms)
    assert HeadConfig(dim=DIM, n_categories=2).query_terms is False
    moved = [
        bool(layer.weight.detach().abs().max() > 0)
        for layer in (head.module.query, head.module.null_query)
    ]
    assert moved == [query_terms, query_terms]
    scores, _ = head.score(index, X, index.search(X, 8), texts)
    assert ((scores >= 0.5) == y).mean() > 0.9


@pytest.mark.parametrize("name", ["head.safetensors", "lexical.safetensors", "head.json"])
def test_head_weights_changed_after_saving_are_refused(tmp_path, name):
    index, head, *_ = _trained(lexical=True)
    write_index_dir(tmp_path, index, head)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{name}: its SHA-256 does not match the manifest's"):
        load_head(tmp_path)
    with pytest.raises(DataError, match=f"{name}: its SHA-256 does not match the manifest's"):
        ReferenceIndex.load(tmp_path, model="m", dim=DIM)


def test_no_head_in_a_plain_index_directory(tmp_path):
    assert load_head(tmp_path) is None


def test_the_detector_scores_through_the_head_with_evidence():
    index, head, X, y, texts = _trained(lexical=True)
    detector = Detector(None, index, ScorerSettings(threshold=0.5), head)
    with pytest.raises(ValueError, match="pass texts"):
        detector.score(X[:40])
    assessments = detector.score(X[:40], texts[:40]).assessments
    assert np.mean([a.is_alert == t for a, t in zip(assessments, y[:40], strict=True)]) > 0.85
    assert detector.top_k == head.config.top_k  # the head's, not the scorer settings'
    alert = next(a for a in assessments if a.is_alert)
    assert alert.evidence and alert.category in ("lottery", "delivery")
    assert sum(alert.category_distribution.values()) == pytest.approx(alert.score, abs=1e-4)


def test_a_loaded_head_scores_in_numpy_without_importing_torch(tmp_path):
    """A worker loads the head from its files and scores without torch (issue 21: a
    worker on an ONNX encoder imports no torch), with the trained module's scores."""
    import subprocess
    import sys

    index, head, X, _, texts = _trained(lexical=True)
    keys = index.search(X, 8)
    write_index_dir(tmp_path, index, head)
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "texts.txt").write_text("\n".join(texts))
    script = f"""
import sys
import numpy as np
from pathlib import Path
from fraud.index import ReferenceIndex
from fraud.scoring import load_head
d = Path({str(tmp_path)!r})
index = ReferenceIndex.load(d, model="m", dim={DIM})
X = np.load(d / "X.npy")
texts = (d / "texts.txt").read_text().split("\\n")
scores, attention = load_head(d).score(index, X, index.search(X, 8), texts)
np.save(d / "scores.npy", np.hstack([scores[:, None], attention]))
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    expected = np.hstack(
        [s[:, None] if s.ndim == 1 else s for s in head.score(index, X, keys, texts)]
    )
    assert np.allclose(np.load(tmp_path / "scores.npy"), expected, atol=1e-5)
