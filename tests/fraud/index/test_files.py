"""Index directories on disk (fraud/index/files.py): never over another index or a user's
files, all at once, one manifest covering every file; a stale trained head is not used."""

import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest

from fraud.config import ScorerSettings, Settings
from fraud.datasets import LabeledText
from fraud.errors import DataError
from fraud.fitting import train_head
from fraud.index import MANIFEST_FILE, Reference, ReferenceIndex
from fraud.index.files import HEAD_CONFIG, HEAD_WEIGHTS, check_writable, write_index_dir
from fraud.scoring import HeadConfig, TrainedHead, load_head
from fraud.scoring.detector import Detector
from tests.fakes import distinct_tail, unit_vectors

DIM = 16
BANK = {"topic": "fraud-references", "cluster_id": "c-1"}


def _index(n: int = 8, seed: int = 0) -> ReferenceIndex:
    index = ReferenceIndex("m", DIM, {"threshold": 0.5})
    items = [
        LabeledText(f"text {seed}-{i}", "fraud" if i % 2 else "legit", "lottery" if i % 2 else None)
        for i in range(n)
    ]
    index.add(items, unit_vectors(n, DIM, seed), "t")
    return index


def _load(directory) -> ReferenceIndex:
    return ReferenceIndex.load(directory, model="m", dim=DIM)


def _with_head(directory, threshold: float = 0.9) -> tuple[ReferenceIndex, TrainedHead]:
    """An index with a trained head (synthetic data, a few epochs) written as `directory`."""
    rng = np.random.default_rng(1)
    y = rng.random(120) < 0.4
    X = unit_vectors(120, DIM, 2) + np.where(y[:, None], 0.9, 0.0) * np.eye(DIM)[0]
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    index = ReferenceIndex("m", DIM, {"threshold": 0.5})
    texts = [f"message {distinct_tail(i)}" for i in range(120)]
    items = [
        LabeledText(t, "fraud" if f else "legit", "lottery" if f else None)
        for t, f in zip(texts, y, strict=True)
    ]
    ids = np.array(index.add(items, X, "t"))
    config = HeadConfig(dim=DIM, n_categories=1, top_k=8, epochs=3, lexical=False)
    head = train_head(config, index, X, index.search(X, 8, exclude_ids=ids), texts, y)
    head.threshold = threshold
    write_index_dir(directory, index, head)
    return _load(directory), head


# -- who may replace what ----------------------------------------------------------------


def test_another_index_is_refused_in_one_line_and_kept(tmp_path):
    first = _index(8, seed=0)
    first.save(tmp_path)
    with pytest.raises(DataError) as err:
        _index(6, seed=1).save(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "--force" in message and "8 references" in message
    assert _load(tmp_path).version == first.version  # untouched


def test_force_replaces_another_index_and_its_head_but_keeps_the_users_files(tmp_path):
    target = tmp_path / "idx"
    _with_head(target)
    (target / "notes.txt").write_text("mine")
    (target / "plots").mkdir()
    (target / "plots" / "a.png").write_bytes(b"png")
    other = _index(6, seed=1)
    other.save(target, force=True)
    assert _load(target).version == other.version
    assert not (target / HEAD_CONFIG).exists()  # the head of the replaced index went with it
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "plots" / "a.png").read_bytes() == b"png"
    assert os.listdir(tmp_path) == ["idx"]  # nothing left beside it


def test_a_directory_of_the_users_files_only_gets_the_index_beside_them(tmp_path):
    (tmp_path / "README.txt").write_text("my bank")
    index = _index()
    index.save(tmp_path)
    assert _load(tmp_path).version == index.version
    assert (tmp_path / "README.txt").read_text() == "my bank"


def test_a_symbolic_link_to_the_directory_stays_a_link_to_the_new_index(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    _index(8).save(real)
    link.symlink_to(real)
    loaded = _load(link)
    loaded.add([LabeledText("one more", "legit", None)], unit_vectors(1, DIM, 5), "t")
    loaded.save(link)
    assert link.is_symlink() and len(_load(real)) == 9
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_the_index_a_command_loaded_is_updated_in_place_and_keeps_its_head(tmp_path):
    loaded, _ = _with_head(tmp_path)
    loaded.scorer_params["temperature"] = 0.07  # e.g. `fraud calibrate`
    loaded.save(tmp_path)
    again = _load(tmp_path)
    assert again.scorer_params["temperature"] == 0.07
    assert load_head(tmp_path).index_version == again.version  # carried, still valid


def test_an_index_changed_since_it_was_loaded_is_not_written_over(tmp_path):
    _index(8, seed=0).save(tmp_path)
    loaded = _load(tmp_path)
    _index(6, seed=1).save(tmp_path, force=True)  # another command, meanwhile
    with pytest.raises(DataError, match="changed while this command ran"):
        loaded.save(tmp_path)


def test_a_snapshot_of_the_same_bank_may_replace_one_another_may_not(tmp_path):
    linked = _index(8)
    linked.bank = BANK
    linked.save(tmp_path)
    fresh = _index(9, seed=2)  # the bank as it is now
    fresh.bank = dict(BANK)
    check_writable(tmp_path, fresh)
    other = _index(9, seed=2)
    other.bank = {**BANK, "cluster_id": "c-2"}
    with pytest.raises(DataError, match="already holds an index of 8 references"):
        check_writable(tmp_path, other)


# -- all at once -------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_old_index_whole(tmp_path):
    target = tmp_path / "idx"
    old = _index(8)
    old.save(target)
    loaded = _load(target)
    # A reference that cannot be written: the write fails after index.faiss is written.
    loaded.upsert(Reference(99, object(), "fraud", "x", "t"), unit_vectors(1, DIM, 9))
    with pytest.raises(TypeError):
        loaded.save(target)
    assert _load(target).version == old.version
    assert os.listdir(tmp_path) == ["idx"]  # no temporary left beside it


def test_a_crash_between_the_two_renames_says_which_directory_to_rename_back(tmp_path):
    target = tmp_path / "idx"
    _index().save(target)
    aside = tmp_path / ".idx.old-1234abcd"
    os.rename(target, aside)  # where replace_directory is between its two renames
    with pytest.raises(DataError, match=f"rename that back to {target}") as err:
        _load(target)
    assert str(aside) in str(err.value)


# -- one manifest covers every file ------------------------------------------------------


def test_the_manifest_covers_the_head_files(tmp_path):
    _with_head(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 3
    assert set(manifest["files"]) == {
        "index.faiss",
        "references.jsonl",
        "head.json",
        "head.safetensors",
    }


@pytest.mark.parametrize("name", [HEAD_WEIGHTS, HEAD_CONFIG, "references.jsonl"])
def test_a_missing_file_is_refused_in_one_line(tmp_path, name):
    _with_head(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(DataError, match="missing") as err:
        _load(tmp_path)
    assert "\n" not in str(err.value)


def test_a_head_the_manifest_does_not_cover_is_refused(tmp_path):
    source = tmp_path / "trained"
    _with_head(source)
    plain = tmp_path / "plain"
    _index().save(plain)
    for name in (HEAD_CONFIG, HEAD_WEIGHTS):  # copied in by hand
        (plain / name).write_bytes((source / name).read_bytes())
    with pytest.raises(DataError, match="not covered by the index manifest"):
        load_head(plain)


def test_an_index_of_the_previous_format_is_refused_saying_what_to_do(tmp_path):
    _index().save(tmp_path)
    path = tmp_path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 2
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format 2") as err:
        _load(tmp_path)
    assert "fraud index build" in str(err.value) and "\n" not in str(err.value)


# -- a trained head is used only with the index it was trained on ------------------------


@pytest.fixture
def fake_encoder(monkeypatch):
    """Detector.from_settings without the real model: these tests are about the choice of
    scorer, which reads the directory, not the embeddings."""
    from fraud.encoding.encoder import Encoder

    monkeypatch.setattr(
        Encoder, "from_settings", classmethod(lambda cls, s: SimpleNamespace(name="m", dim=DIM))
    )


def test_a_head_trained_on_this_index_scores_with_its_own_threshold(tmp_path, fake_encoder):
    _with_head(tmp_path, threshold=0.9)
    detector = Detector.from_settings(Settings(), tmp_path)
    assert detector.head is not None and detector.params.threshold == 0.9
    assert detector.info["scorer_reason"] == "trained_head"
    explicit = Settings(scorer=ScorerSettings(threshold=0.3))
    assert Detector.from_settings(explicit, tmp_path).params.threshold == 0.3
    # Bank changes applied at run time do not make it stale: it was chosen at load.
    detector.index.upsert(Reference(500, "new", "fraud", "lottery", "t"), unit_vectors(1, DIM))
    assert detector.head is not None and "+1" in detector.index.version


def test_a_stale_head_is_not_used_and_says_so(tmp_path, fake_encoder, caplog):
    loaded, _ = _with_head(tmp_path, threshold=0.9)
    loaded.add([LabeledText("one more", "legit", None)], unit_vectors(1, DIM, 7), "t")
    with caplog.at_level(logging.WARNING):
        loaded.save(tmp_path)  # `fraud index add`: the index changes, the head stays
    assert any("the parameter-free scorer scores" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        detector = Detector.from_settings(Settings(), tmp_path)
    assert detector.head is None
    assert detector.params.threshold == 0.5  # the manifest's, not the head's 0.9
    assert detector.info["scorer"] == "attention"
    assert detector.info["scorer_reason"] == "stale_head"
    assert "fraud train" in detector.choice.detail
    assert any(r.levelno == logging.ERROR and "not used" in r.message for r in caplog.records)


def test_a_snapshot_of_a_bank_that_moved_on_keeps_the_head_and_the_detector_falls_back(
    tmp_path, fake_encoder, caplog
):
    """What `fraud setup`/`fraud index snapshot` do to a linked directory with a head: the
    head is kept (the bank may be unchanged, and then it still matches) and, when the bank
    changed, warned about and not used."""
    loaded, _ = _with_head(tmp_path)
    loaded.bank = BANK
    loaded.save(tmp_path)  # linked (as publish does); the head still matches
    assert Detector.from_settings(Settings(), tmp_path).head is not None
    snapshot = _index(10, seed=3)  # what the bank holds now
    snapshot.bank = dict(BANK)
    with caplog.at_level(logging.WARNING):
        snapshot.save(tmp_path)
    assert (tmp_path / HEAD_CONFIG).is_file()
    assert any("was trained on index version" in r.message for r in caplog.records)
    assert Detector.from_settings(Settings(), tmp_path).choice.reason == "stale_head"


def test_train_keeps_the_heads_threshold_apart_from_the_parameter_free_one(tmp_path):
    from fraud.fitting.commands import train

    index, _ = _with_head(tmp_path / "x")  # just an index with enough references
    directory = tmp_path / "idx"
    index.save(directory)
    index = _load(directory)
    config = HeadConfig(dim=DIM, n_categories=1, top_k=8, epochs=3, lexical=False)
    fitted = train(index, directory, config, {"target_fpr": 0.05})
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert manifest["scorer"]["threshold"] == 0.5  # untouched
    assert json.loads((directory / HEAD_CONFIG).read_text())["threshold"] == pytest.approx(
        fitted["threshold"], abs=1e-6
    )
