"""The character n-gram term of the key similarity (fraud/text/ngrams.py) and where it enters:
the index search, the detector, the fit on training data, the head's config."""

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from fraud.config import ScorerSettings
from fraud.datasets import LabeledText
from fraud.fitting import fit_key_similarity, fit_temperature_and_null, train_over_index
from fraud.index import KeySimilarity, Reference, ReferenceIndex, write_index_dir
from fraud.scoring import Detector, HeadConfig, effective_scorer, load_head
from fraud.text.ngrams import CharNgrams, mix, pair_cosines
from tests.fakes import unit_vectors

DIM = 8
TEXTS = [
    "您的快递在运输中丢失，请添加理赔专员微信办理双倍理赔。",
    "恭喜您被抽中为幸运用户，获得奖金68000元，请点击链接领取。",
    "明天上午十点开会，地点不变。",
    "Your parcel is held at the depot: pay the £1.45 fee at parcel-fee.info",
    "See you at lunch tomorrow?",
]


def _index(texts=TEXTS, seed=0) -> tuple[ReferenceIndex, np.ndarray]:
    vectors = unit_vectors(len(texts), DIM, seed)
    index = ReferenceIndex("m", DIM)
    labels = ["fraud", "fraud", "legit", "fraud", "legit"]
    items = [
        LabeledText(t, label, "delivery" if label == "fraud" else None)
        for t, label in zip(texts, labels, strict=True)
    ]
    index.add(items, vectors, "test")
    return index, vectors


def test_mix_is_the_dense_cosine_at_zero_and_convex_above():
    dense = np.array([[0.9, -0.2, 0.0]], np.float32)
    ngram = np.array([[0.5, 0.8, 1.0]], np.float32)
    assert mix(dense, ngram, 0.0) is dense
    assert np.array_equal(mix(dense, ngram, 1.0), ngram)
    np.testing.assert_allclose(mix(dense, ngram, 0.25), 0.75 * dense + 0.25 * ngram, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix(dense, ngram, 1.5)


def test_char_ngram_cosine_sees_through_normalization_and_shared_characters():
    model = CharNgrams.fit(TEXTS, (1, 3))
    rows = model.transform(
        [
            "中 奖 通 知：恭喜您",  # spaced out, as scammers do: normalized away
            "中奖通知：恭喜您",
            "ＷＩＮ ＮＯＷ",  # full-width: NFKC, then lowercased
            "win now",
            "",
        ]
    )
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 1, 1, 1, 0], atol=1e-6)
    cos = (rows @ rows.T).toarray()
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert cos[2, 3] == pytest.approx(1.0, abs=1e-6)
    assert cos[0, 3] == 0.0  # no character in common


def test_pair_cosines_align_each_query_with_its_own_keys():
    model = CharNgrams.fit(TEXTS)
    queries = model.transform(TEXTS[:2])
    keys = model.transform([TEXTS[0], TEXTS[2], TEXTS[2], TEXTS[1]])  # query 0: 0, 2; 1: 2, 1
    cos = pair_cosines(queries, keys, 2)
    assert cos.shape == (2, 2)
    assert cos[0, 0] == pytest.approx(1.0, abs=1e-6) and cos[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert cos[0, 1] < 0.5 and cos[1, 0] < 0.5
    assert pair_cosines(queries[:0], keys[:0], 3).shape == (0, 3)


def test_search_with_weight_zero_is_exactly_the_dense_search():
    index, vectors = _index()
    plain = index.search(vectors, 3)
    zero = index.search(vectors, 3, texts=TEXTS, similarity=KeySimilarity(0.0))
    for field in ("similarities", "ids", "valid", "is_fraud", "category_codes", "log_weights"):
        assert np.array_equal(getattr(plain, field), getattr(zero, field)), field


def test_search_mixes_the_ngram_cosine_into_the_keys_it_retrieved():
    index, vectors = _index()
    queries = ["快递丢失了，理赔请加微信", "lunch tomorrow?", "快递", "x", "y"]
    plain = index.search(vectors, 4)
    mixed = index.search(vectors, 4, texts=queries, similarity=KeySimilarity(0.4))
    assert np.array_equal(plain.ids, mixed.ids)  # retrieval is by the dense embedding
    ngram = index.ngram_similarities(queries, plain.ids)
    expected = np.where(plain.valid, 0.6 * plain.similarities + 0.4 * ngram, 0.0)
    np.testing.assert_allclose(mixed.similarities, expected, rtol=1e-5, atol=1e-6)
    parcel_scam = list(plain.ids[0]).index(0)  # shares words with the first query
    assert ngram[0, parcel_scam] > 0.2 and ngram[0, parcel_scam] == ngram[0].max()
    with pytest.raises(ValueError, match="pass texts"):
        index.search(vectors, 4, similarity=KeySimilarity(0.4))
    with pytest.raises(ValueError, match="2 texts for 5 queries"):
        index.search(vectors, 4, texts=queries[:2], similarity=KeySimilarity(0.4))


def test_ngram_vectors_follow_live_changes_and_survive_a_reload(tmp_path):
    index, vectors = _index()
    query = [TEXTS[2]]
    assert index.ngram_similarities(query, np.array([[2, 4, -1]]))[0, 0] == pytest.approx(1, 1e-5)
    index.upsert(Reference(2, "全新的内容", "legit", None, "analyst"), vectors[2])
    index.remove(4)
    after = index.ngram_similarities(query, np.array([[2, 4, -1]]))
    assert after[0, 0] < 0.2 and after[0, 1] == 0.0 and after[0, 2] == 0.0
    new = Reference(9, TEXTS[2], "legit", None, "analyst")
    index.upsert(new, vectors[2])
    assert index.ngram_similarities(query, np.array([[9]]))[0, 0] == pytest.approx(1, 1e-5)
    # No new file: the vectors come from references.jsonl, the IDF from the references of
    # the snapshot, so a saved index and the same one loaded give the same similarities.
    index.save(tmp_path)
    loaded = ReferenceIndex.load(tmp_path, model="m", dim=DIM)
    ids = np.array([[0, 1, 2, 3, 9]] * 2)
    texts = ["快递理赔", "pay the fee"]
    np.testing.assert_allclose(
        loaded.ngram_similarities(texts, ids), index.ngram_similarities(texts, ids), atol=1e-6
    )


def test_the_detector_at_weight_zero_scores_exactly_as_before_and_above_reads_the_text():
    index, vectors = _index()
    queries = unit_vectors(3, DIM, seed=5)
    texts = [TEXTS[0], TEXTS[4], "毫不相干"]
    params = ScorerSettings(temperature=0.05, null_similarity=0.3)
    before = Detector(None, index, params).score(queries).assessments
    zero = Detector(None, index, params.model_copy(update={"ngram_weight": 0.0}))
    assert zero.score(queries, texts).assessments == before
    named = SimpleNamespace(name="m")  # the detector's info names the encoder
    detector = Detector(named, index, params.model_copy(update={"ngram_weight": 0.5}))
    assert detector.similarity == KeySimilarity(0.5, (1, 3))  # resolved once, at start
    with pytest.raises(ValueError, match="reads the message text"):
        detector.score(queries)
    after = detector.score(queries, texts).assessments
    # The first message is the parcel scam's text itself: its n-gram cosine to it is 1.
    top = max(after[0].evidence, key=lambda e: e.weight)
    assert top.reference_id == 0 and after[0].score > before[0].score
    assert detector.info["ngram_weight"] == "0.5"


def test_the_weight_is_a_scorer_parameter_stored_in_the_manifest():
    index = ReferenceIndex("m", 4, {"ngram_weight": 0.3, "ngram_range": [2, 4]})
    params = effective_scorer(ScorerSettings(), index)
    assert (params.ngram_weight, params.ngram_range) == (0.3, (2, 4))
    assert effective_scorer(ScorerSettings(ngram_weight=0.0), index).ngram_weight == 0.0
    assert ScorerSettings().ngram_weight == 0.0  # off by default
    for bad in ({"ngram_weight": 1.2}, {"ngram_range": (3, 2)}, {"ngram_range": (0, 2)}):
        with pytest.raises(ValidationError):
            ScorerSettings(**bad)


def _surface_labeled(n: int = 400):
    """Messages whose label is in their characters only: the dense embeddings are noise."""
    rng = np.random.default_rng(3)
    y = rng.random(n) < 0.4
    texts = [f"{'恭喜中奖请领取奖金' if f else '明天一起吃午饭吧'}{rng.integers(1000)}" for f in y]
    X = unit_vectors(n, DIM, seed=4)
    index = ReferenceIndex("m", DIM)
    items = [
        LabeledText(t, "fraud" if f else "legit", "lottery" if f else None)
        for t, f in zip(texts, y, strict=True)
    ]
    ids = np.array(index.add(items, X, "t"))
    return index, X, ids, texts, y


def test_the_fit_takes_the_term_where_the_labels_are_in_the_characters():
    index, X, ids, texts, y = _surface_labeled()
    dense = index.search(X, 8, exclude_ids=ids)
    fitted = fit_key_similarity(index, dense, texts, y, ranges=[(1, 2)], weights=[0.5, 0.9])
    t, tau, loss = fit_temperature_and_null(dense.similarities, dense.valid, dense.is_fraud, y)
    assert fitted["ngram_weight"] > 0 and fitted["log_loss"] < loss - 0.1
    # Without candidate ranges it is the fit of T and tau alone, weight 0.
    alone = fit_key_similarity(index, dense, texts, y, ranges=())
    assert alone["ngram_weight"] == 0.0
    assert (alone["temperature"], alone["null_similarity"], alone["log_loss"]) == (t, tau, loss)


def test_a_head_trains_over_the_fitted_term_and_keeps_it(tmp_path):
    index, X, ids, texts, y = _surface_labeled()
    config = HeadConfig(dim=DIM, n_categories=1, top_k=8, epochs=10, lexical=False)
    head = train_over_index(config, index, X, ids, texts, y, fit_ngram=True)
    assert head.config.ngram_weight > 0
    write_index_dir(tmp_path, index, head)
    loaded = load_head(tmp_path)
    assert loaded.config == head.config and isinstance(loaded.config.ngram_range, tuple)
    detector = Detector(None, index, ScorerSettings(top_k=8), loaded)
    assert detector.similarity == head.config.similarity  # the head's, not the settings'
    assert detector.top_k == 8
    scores = np.array([a.score for a in detector.score(X, texts).assessments])
    assert ((scores >= 0.5) == y).mean() > 0.9


def test_a_key_similarity_is_one_value_read_from_either_record():
    fitted = {"ngram_weight": 0.3, "ngram_range": [2, 4], "temperature": 0.1}
    settings = ScorerSettings(ngram_weight=0.3, ngram_range=(2, 4))
    head = HeadConfig(dim=DIM, n_categories=1, ngram_weight=0.3, ngram_range=[2, 4])
    assert KeySimilarity.of(fitted) == KeySimilarity.of(settings) == head.similarity
    assert KeySimilarity(0.3, (2, 4)).as_fields() == {"ngram_weight": 0.3, "ngram_range": [2, 4]}
    assert not KeySimilarity().reads_text and KeySimilarity(0.1).reads_text
    for weight, ngram_range in ((1.5, (1, 3)), (0.2, (3, 2)), (0.2, (0, 2))):
        with pytest.raises(ValueError):
            KeySimilarity(weight, ngram_range)
