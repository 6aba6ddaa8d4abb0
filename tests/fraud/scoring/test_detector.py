"""The shared scoring path, with the real encoder and the shipped seed index."""

import json

import numpy as np
import pytest

from fraud.config import ScorerSettings
from fraud.datasets import LabeledText
from fraud.index import KeySimilarity, ReferenceIndex
from fraud.schemas import Decision, parse_message
from fraud.scoring import Detector, ScoreResult, effective_scorer
from tests.fakes import FakeEncoder, assess, unit_vectors

DEMO = "fraud/data/demo_messages.jsonl"


@pytest.mark.model
def test_scams_alert_with_evidence_and_lookalikes_do_not(detector):
    scam, legit = assess(
        detector,
        [
            "Hi mum, I dropped my phone in the loo, this is my new number. Can you send £300 "
            "for my rent today? I'll pay you back Friday xx",
            "Northbank: your one-time passcode is 558201. It expires in 10 minutes. We will "
            "never ask you for this code.",
        ],
    )
    assert scam.is_alert and scam.category == "impersonation"
    assert scam.evidence and all(e.category in scam.category_distribution for e in scam.evidence)
    weights = [e.weight for e in scam.evidence]
    assert weights == sorted(weights, reverse=True)
    assert sum(scam.category_distribution.values()) == pytest.approx(scam.score, abs=1e-4)
    assert not legit.is_alert and legit.score < 0.5


@pytest.mark.model
def test_the_demo_set_is_right_as_the_readme_shows(detector):
    """The README's demo summary: frauds caught 28 of 28, false alerts 2 of 26 legit
    messages (52 of 54 right), both false alerts English look-alikes."""
    from fraud.encoding.routed import is_other_script

    with open(DEMO, encoding="utf-8") as f:
        demo = [json.loads(line) for line in f]
    assessments = assess(detector, [m["text"] for m in demo])
    pairs = list(zip(assessments, demo, strict=True))
    missed = [m["id"] for v, m in pairs if m["expected"] == "fraud" and not v.is_alert]
    false_alerts = [m["id"] for v, m in pairs if m["expected"] != "fraud" and v.is_alert]
    assert (len(demo), sum(m["expected"] == "fraud" for m in demo)) == (54, 28)
    assert missed == [], missed
    assert len(false_alerts) <= 2, false_alerts
    assert not any(is_other_script(m["text"]) for m in demo if m["id"] in false_alerts)


def test_explicit_settings_override_the_manifest_which_overrides_defaults():
    index = ReferenceIndex("m", 4, {"temperature": 0.2, "null_similarity": 0.3})
    params = effective_scorer(ScorerSettings(null_similarity=0.6), index)
    assert (params.temperature, params.null_similarity, params.top_k) == (0.2, 0.6, 32)


def test_fraud_only_and_empty_indexes_score_with_fake_embeddings():
    dim = 8
    frauds = unit_vectors(3, dim, seed=1)
    index = ReferenceIndex("m", dim)
    index.add([LabeledText(f"scam {i}", "fraud", "lottery") for i in range(3)], frauds, "t")
    params = ScorerSettings(top_k=32, temperature=0.05, null_similarity=0.5)
    detector = Detector(None, index, params)
    far = -frauds.mean(axis=0, keepdims=True)
    far /= np.linalg.norm(far)
    near, away = detector.score(np.vstack([frauds[:1], far])).assessments
    assert near.is_alert and near.category == "lottery" and near.evidence[0].reference_id == 0
    assert not away.is_alert and away.score < 0.01 and away.category is None
    empty = Detector(None, ReferenceIndex("m", dim), params).score(frauds).assessments
    assert [v.score for v in empty] == [0.0, 0.0, 0.0] and not empty[0].evidence


def _fake_detector(encoder: FakeEncoder, **params) -> Detector:
    index = ReferenceIndex(encoder.name, encoder.dim)
    texts = ["pay the parcel fee now", "you won a prize", "lunch at noon?"]
    labels = [("fraud", "delivery"), ("fraud", "lottery"), ("legit", None)]
    items = [LabeledText(t, *label) for t, label in zip(texts, labels, strict=True)]
    index.add(items, encoder.encode(texts), "t")
    return Detector(encoder, index, ScorerSettings(**params))


def test_the_hot_path_encodes_scores_and_decides_in_three_steps():
    detector = _fake_detector(FakeEncoder(dim=8), threshold=0.4)
    texts = ["pay the parcel fee now", "something else entirely"]
    queries = detector.encode(texts)
    assert queries.shape == (2, 8) and queries.dtype == np.float32
    result = detector.score(queries, texts)
    assert isinstance(result, ScoreResult) and len(result.assessments) == 2
    assert set(result.timings) == {"search", "attention"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert result.assessments[0].evidence[0].reference_id == 0  # its own text is a reference
    message = parse_message(b'{"id": "m1", "text": "pay the parcel fee now", "to": "r"}', 1000)
    decision = detector.decide(message, result.assessments[0], scored_at="t", processing_ms=1.0)
    assert isinstance(decision, Decision) and decision.score == result.assessments[0].score
    assert (decision.threshold, decision.model, decision.index_version) == (
        0.4,
        "fake",
        detector.index.version,
    )
    assert decision.passthrough == {"to": "r"} and decision.is_alert == (decision.score >= 0.4)
    assert detector.encode([]).shape == (0, 8)


class _Wrong(FakeEncoder):
    def __init__(self, out) -> None:
        super().__init__(name="wrong", dim=8)
        self.out = out

    def encode(self, texts, progress=None):
        return self.out(super().encode(texts, progress))


@pytest.mark.parametrize(
    ("out", "said"),
    [
        (lambda v: v.astype(np.float64), "float64 embeddings, not float32"),
        (lambda v: v[:, :4], r"\(2, 4\) for 2 texts, not \(2, 8\)"),
        (lambda v: v[:1], r"\(1, 8\) for 2 texts"),
        (lambda v: v.tolist(), "list for 2 texts"),
    ],
)
def test_an_encoder_returning_the_wrong_embeddings_is_named_at_the_edge(out, said):
    detector = _fake_detector(FakeEncoder(name="wrong", dim=8))
    detector.encoder = _Wrong(out)
    with pytest.raises(TypeError, match=f"encoder wrong returned {said}"):
        detector.encode(["a", "b"])


def test_top_k_and_the_key_similarity_are_resolved_once_from_the_parameters():
    detector = _fake_detector(FakeEncoder(), top_k=2, ngram_weight=0.3, ngram_range=(2, 4))
    assert detector.top_k == 2 and detector.similarity == KeySimilarity(0.3, (2, 4))
    assert detector.info["top_k"] == "2" and detector.info["ngram_weight"] == "0.3"
    texts = ["you won a prize"]
    keys = detector.score(detector.encode(texts), texts).assessments[0]
    assert len(keys.evidence) <= 2
