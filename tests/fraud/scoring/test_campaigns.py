"""Campaign grouping: pure logic on synthetic embeddings."""

import gc
import tracemalloc

import numpy as np

import fraud.scoring.campaigns as campaigns_module
from fraud.config import CampaignSettings
from fraud.scoring.campaigns import CampaignTracker, Member
from tests.fakes import unit_vectors

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


def test_a_closed_campaigns_row_of_the_one_preallocated_matrix_is_reused():
    tracker = CampaignTracker(CampaignSettings(max_campaigns=3, window_s=60, similarity=0.99))
    a, b, c, d = unit_vectors(4, DIM, seed=3)
    first = tracker.observe(_member(0, "r0", at_ms=0), a, None)
    matrix = tracker._vectors
    assert matrix.shape == (3, DIM)  # every row there from the first campaign on
    second = tracker.observe(_member(1, "r1", at_ms=50_000), b, None)
    assert (first.slot, second.slot) == (0, 1)
    third = tracker.observe(_member(2, "r2", at_ms=70_000), c, None)  # the first is idle
    assert tracker.campaign_of("m0") is None and third.slot == 0  # its row, reused
    assert np.array_equal(matrix[0], c) and tracker._vectors is matrix
    assert tracker.observe(_member(3, "r3", at_ms=71_000), _near(c, 0.01, 1), None) is third
    fourth = tracker.observe(_member(4, "r4", at_ms=72_000), d, None)
    assert fourth.slot == 2 and len(tracker.campaigns) == 3
    # A fourth active campaign: the least recently active (the second) is closed for it.
    fifth = tracker.observe(_member(5, "r5", at_ms=73_000), a, None)
    assert fifth.slot == 1 and tracker.campaign_of("m1") is None
    assert list(tracker.campaigns) == [third.campaign_id, fourth.campaign_id, fifth.campaign_id]


def test_placing_a_message_copies_no_campaign_vector():
    """One product against the matrix: the allocations of a message's placement are a
    small part of the campaign vectors (they were re-stacked for every message)."""
    tracker = CampaignTracker(CampaignSettings(max_campaigns=5000, similarity=0.99))
    vectors = unit_vectors(5000, DIM, seed=4)
    for i, v in enumerate(vectors):
        tracker.observe(_member(i, f"r{i}"), v, None)
    tracemalloc.start()
    try:
        tracker.observe(_member(9999, "r"), vectors[7], None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tracker.campaign_of("m9999") is tracker.campaign_of("m7")
    assert peak < vectors.nbytes / 4, peak


def _fill(tracker: CampaignTracker, campaigns: int, members: int) -> None:
    vectors = unit_vectors(campaigns, DIM, seed=5)
    i = 0
    for _ in range(members):
        for c in range(campaigns):
            tracker.observe(_member(i, f"+44 7700 {i:06d}", at_ms=i), vectors[c], None)
            i += 1


def test_campaigns_filled_past_their_memory_cap_close_the_least_recently_active():
    cap = 2**20
    settings = CampaignSettings(
        max_campaigns=1000, max_members=50, similarity=0.99, max_memory_bytes=cap
    )
    tracker = CampaignTracker(settings)
    _fill(tracker, campaigns=1000, members=10)
    assert 0.9 * cap < tracker.memory_bytes() <= cap and tracker.closed > 0
    remembered = [m for c in tracker.campaigns.values() for m in c.members]
    assert len(tracker.of_message) == len(remembered)
    expected = (
        tracker._vectors.nbytes
        + campaigns_module.CAMPAIGN_OVERHEAD_BYTES * len(tracker.campaigns)
        + campaigns_module.MEMBER_OVERHEAD_BYTES * len(remembered)
        + campaigns_module.RECIPIENT_OVERHEAD_BYTES
        * sum(len(c.recipients) for c in tracker.campaigns.values())
    )
    assert tracker.memory_bytes() == expected
    # The most recently active are kept: the last message's campaign, among others.
    assert tracker.campaign_of(f"m{1000 * 10 - 1}") is not None


def test_a_campaign_remembers_at_most_max_members_members_and_recipients():
    tracker = CampaignTracker(CampaignSettings(max_members=5))
    v = unit_vectors(1, DIM)[0]
    for i in range(12):
        campaign = tracker.observe(_member(i, f"r{i}"), v, None)
    assert campaign.size == 12 and len(campaign.members) == 5
    assert len(campaign.recipients) == 5 and len(tracker.of_message) == 5


def test_the_accounting_matches_the_memory_tracemalloc_measures():
    for campaigns, members in ((2000, 1), (100, 40)):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            settings = CampaignSettings(max_campaigns=campaigns, similarity=0.99)
            tracker = CampaignTracker(settings)
            _fill(tracker, campaigns, members)
            gc.collect()
            measured = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert 0.85 * measured <= tracker.memory_bytes() <= 1.15 * measured, measured
