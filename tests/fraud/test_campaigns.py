"""Campaign grouping: pure logic on synthetic embeddings."""

import numpy as np

from fraud.campaigns import CampaignTracker, Member
from fraud.config import CampaignSettings
from tests.conftest import unit_vectors

DIM = 16


def _near(v: np.ndarray, noise: float, seed: int) -> np.ndarray:
    w = v + noise * np.random.default_rng(seed).normal(size=v.shape)
    return (w / np.linalg.norm(w)).astype(np.float32)


def _member(i: int, recipient: str, score: float = 0.4, at_ms: int = 0, alert: bool = False):
    return Member(f"m{i}", recipient, score, alert, at_ms)


def test_near_duplicates_to_many_recipients_form_one_reported_campaign():
    tracker = CampaignTracker(CampaignSettings(similarity=0.9, min_recipients=3))
    a, b = unit_vectors(2, DIM, seed=1)
    first = tracker.observe(_member(0, "r0"), a, "delivery")
    second = tracker.observe(_member(1, "r1"), _near(a, 0.05, 1), None)
    assert second is first and not tracker.reported(first)
    other = tracker.observe(_member(2, "r2"), b, "investment")  # unrelated: its own campaign
    assert other is not first
    third = tracker.observe(_member(3, "r3", alert=True), _near(a, 0.05, 2), None)
    assert third is first and tracker.reported(first)
    record = first.record()
    assert (record["size"], record["recipients"], record["alerts"]) == (3, 3, 1)
    assert record["category"] == "delivery"
    assert [m.message_id for m in first.let_through()] == ["m0", "m1"]


def test_low_scores_join_nothing_and_a_replayed_decision_counts_once():
    tracker = CampaignTracker(CampaignSettings(min_score=0.3))
    v = unit_vectors(1, DIM)[0]
    assert tracker.observe(_member(0, "r0", score=0.1), v, None) is None
    c = tracker.observe(_member(1, "r1"), v, None)
    assert tracker.observe(_member(1, "r1"), v, None) is c and c.size == 1


def test_an_idle_campaign_closes_and_a_late_duplicate_starts_a_new_one():
    tracker = CampaignTracker(CampaignSettings(window_s=60))
    v = unit_vectors(1, DIM)[0]
    early = tracker.observe(_member(0, "r0", at_ms=0), v, None)
    late = tracker.observe(_member(1, "r1", at_ms=61_000), v, None)
    assert late is not early and tracker.campaign_of("m0") is None
