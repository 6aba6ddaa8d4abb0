"""The shipped default detector (fraud/fitting/default.py): its head is tied to the
references it was fitted on, its build is cached, and the committed files are the ones
its provenance records. Small data and a fake encoder: the real build is `fraud demo`'s
(tests/workers/test_demo.py)."""

import csv
import json
import shutil

import pytest

import fraud.fitting.default as default
from fraud.data import DEFAULT_REFERENCE_SOURCES, default_head_dir
from fraud.errors import DataError
from fraud.index import ReferenceIndex
from fraud.index.files import sha256_file
from fraud.scoring.detector import choose_head
from tests.fakes import FakeEncoder

FRAUD = ["Your parcel is held: pay the fee at http://parcel{}.example", "WIN a prize {} now"]
LEGIT = ["Lunch at {} tomorrow?", "The meeting moved to room {}"]


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """The default's machinery on 80 references of our own, its head fitted into tmp
    once for the module; each test gets its own copy of the head and its own cache."""
    root = tmp_path_factory.mktemp("small-default")
    path = root / "refs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "category"])
        for i in range(20):
            w.writerow([FRAUD[i % 2].format(i), "fraud", ["delivery", "lottery"][i % 2]])
            w.writerow([LEGIT[i % 2].format(i), "legit", ""])
            w.writerow([LEGIT[i % 2].format(f"x{i}"), "legit", ""])
            w.writerow([FRAUD[i % 2].format(f"x{i}"), "fraud", ["delivery", "lottery"][i % 2]])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(default, "DEFAULT_REFERENCE_SOURCES", (("small", path),))
        provenance = default.fit_default(
            FakeEncoder(),
            {"top_k": 8},
            root / "work",
            root / "head",
            "test",
            epochs=5,
            lexical=False,
        )
        yield provenance, root


@pytest.fixture
def shipped(small_default, tmp_path, monkeypatch):
    """(provenance, this test's copy of the shipped head directory)."""
    provenance, root = small_default
    head_dir = tmp_path / "head"
    shutil.copytree(root / "head", head_dir)
    monkeypatch.setattr(default, "default_head_dir", lambda: head_dir)
    return provenance, head_dir


def test_the_shipped_head_is_attached_to_a_build_of_the_same_references(shipped, tmp_path):
    provenance, _ = shipped
    assert list(provenance["inputs"]) == ["refs.csv"]
    assert 0 < provenance["head"]["threshold"] < 1 and provenance["target_fpr"] == 0.01
    encoder = FakeEncoder()
    cached, why_not = default.build_default(encoder, {}, False, tmp_path / "cache")
    assert why_not is None
    index = ReferenceIndex.load(cached, model=encoder.name, dim=encoder.dim)
    assert index.version == provenance["index_version"]
    head, choice = choose_head(cached, index)
    assert choice.reason == "trained_head" and head.threshold == pytest.approx(
        provenance["head"]["threshold"]
    )
    assert index.scorer_params["threshold"] == provenance["scorer"]["threshold"]
    # A second build is the cached one: nothing is encoded again.
    again = FakeEncoder()
    assert default.build_default(again, {}, False, tmp_path / "cache") == (cached, None)
    assert again.seen == []


def test_another_encoder_variant_of_the_model_gets_a_build_of_its_own(shipped, tmp_path):
    """The build cache keys by what the embeddings depend on (the encoder's cache_key),
    not the model's name alone: the references are encoded again by another variant of
    the same model (say onnx-int8-row after torch-bf16), and the head, which belongs to
    the model and the references, is still attached."""
    first = FakeEncoder()
    first.cache_key = "fake|torch-bf16-packed"
    cached, _ = default.build_default(first, {}, False, tmp_path / "cache")
    other = FakeEncoder()
    other.cache_key = "fake|onnx-int8-row-v1"
    cached_other, why_not = default.build_default(other, {}, False, tmp_path / "cache")
    assert cached_other != cached and other.seen  # encoded again, into a build of its own
    assert why_not is None


def test_another_model_gets_no_head_and_says_why(shipped, tmp_path):
    other = FakeEncoder(name="another-model")
    cached, why_not = default.build_default(other, {}, False, tmp_path / "cache")
    assert "another-model" in why_not and "fraud train" in why_not
    index = ReferenceIndex.load(cached, model=other.name, dim=other.dim)
    assert choose_head(cached, index)[0] is None


def test_a_changed_shipped_head_file_is_refused(shipped, tmp_path):
    _, head_dir = shipped
    weights = head_dir / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="head.safetensors: does not match the SHA-256"):
        default.build_default(FakeEncoder(), {}, False, tmp_path / "cache")


def test_the_committed_head_is_the_one_fitted_on_the_shipped_references():
    """fraud/data/default_head/provenance.json records the digests of the reference files
    and of the head files: a changed seed set or UCI copy needs `make default-head` again."""
    provenance = json.loads((default_head_dir() / "provenance.json").read_text())
    assert provenance["inputs"] == {p.name: sha256_file(p) for _, p in DEFAULT_REFERENCE_SOURCES}
    for name, digest in provenance["files"].items():
        assert sha256_file(default_head_dir() / name) == digest, name
    assert provenance["target_fpr"] == 0.01
    assert provenance["command"].startswith("fraud index fit-default")
