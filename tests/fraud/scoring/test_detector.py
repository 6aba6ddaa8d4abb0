"""The shared scoring path, with the real encoder and the shipped seed index."""

import json

import numpy as np
import pytest

from fraud.config import ScorerSettings
from fraud.datasets import LabeledText
from fraud.index.reference_index import ReferenceIndex
from fraud.scoring.detector import Detector, effective_scorer
from tests.fakes import unit_vectors

DEMO = "fraud/data/demo_messages.jsonl"


@pytest.mark.model
def test_scams_alert_with_evidence_and_lookalikes_do_not(detector):
    scam, legit = detector.score(
        [
            "Hi mum, I dropped my phone in the loo, this is my new number. Can you send £300 "
            "for my rent today? I'll pay you back Friday xx",
            "Northbank: your one-time passcode is 558201. It expires in 10 minutes. We will "
            "never ask you for this code.",
        ]
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
    verdicts = detector.score([m["text"] for m in demo])
    pairs = list(zip(verdicts, demo, strict=True))
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
    near, away = detector.score_embeddings(np.vstack([frauds[:1], far]))
    assert near.is_alert and near.category == "lottery" and near.evidence[0].reference_id == 0
    assert not away.is_alert and away.score < 0.01 and away.category is None
    empty = Detector(None, ReferenceIndex("m", dim), params).score_embeddings(frauds)
    assert [v.score for v in empty] == [0.0, 0.0, 0.0] and not empty[0].evidence
