"""The replay evaluation (fraud/quality/replay.py): the simulated stream, history off vs on, and
the tuning protocol, on small synthetic vectors (no encoder)."""

import json

import numpy as np
import pytest

from fraud.config import HistorySettings, ScorerSettings
from fraud.datasets import LabeledText
from fraud.fitting import Dataset, Split, split_index
from fraud.index import ReferenceIndex
from fraud.quality import LearnedAttentionVariant
from fraud.quality.replay import (
    COLUMNS,
    OFF,
    build_stream,
    campaigns,
    choose_setting,
    had_history,
    replay,
    replay_evaluate,
    replay_report_text,
    setting_name,
    stream_metrics,
    without_campaigns,
)
from fraud.scoring import Detector
from tests.fakes import distinct_tail, unit_vectors

DIM = 32


def _near(center: np.ndarray, n: int, noise: float, rng) -> np.ndarray:
    v = center + noise * rng.normal(size=(n, len(center)))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _held_out(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three campaigns of near-duplicates (sizes 5, 4, 3), two single frauds, 60 legit."""
    rng = np.random.default_rng(seed)
    centers = unit_vectors(5, DIM, seed + 1)
    X = np.vstack(
        [
            _near(centers[0], 5, 0.05, rng),
            _near(centers[1], 4, 0.05, rng),
            _near(centers[2], 3, 0.05, rng),
            centers[3:5],
            unit_vectors(60, DIM, seed + 2),
        ]
    )
    y = np.r_[np.ones(14, bool), np.zeros(60, bool)]
    order = rng.permutation(len(y))  # campaigns are not contiguous rows
    return X[order], y[order]


def test_campaigns_are_connected_components_of_the_similarity_graph():
    a = np.eye(4, dtype=np.float32)[0]
    b = np.array([0.8, 0.6, 0, 0], np.float32)  # cos(a, b) = 0.8
    c = np.array([0.28, 0.96, 0, 0], np.float32)  # cos(b, c) = 0.8, cos(a, c) = 0.28
    d = np.eye(4, dtype=np.float32)[3]
    labels = campaigns(np.stack([d, a, b, c]), 0.75)
    assert labels.tolist() == [0, 1, 1, 1]  # a-b-c chain into one; d alone
    assert campaigns(np.stack([d, a, b, c]), 0.85).tolist() == [0, 1, 2, 3]


def test_the_stream_is_deterministic_and_well_formed():
    X, y = _held_out()
    s1, s2 = build_stream(X, y, seed=(7, 0)), build_stream(X, y, seed=(7, 0))
    for name in ("rows", "recipients", "at_ms", "campaign", "campaign_size", "campaign_position"):
        assert np.array_equal(getattr(s1, name), getattr(s2, name)), name
    other = build_stream(X, y, seed=(7, 1))
    assert not np.array_equal(s1.rows, other.rows)

    assert sorted(s1.rows.tolist()) == list(range(len(y)))  # every message once
    assert np.all(np.diff(s1.at_ms) > 0)
    ys = y[s1.rows]
    assert np.array_equal(s1.campaign >= 0, ys)
    sizes = sorted({(c, n) for c, n in zip(s1.campaign, s1.campaign_size, strict=True) if c >= 0})
    assert sorted(n for _, n in sizes) == [1, 1, 3, 4, 5]
    owners = []
    for c in np.unique(s1.campaign[s1.campaign_size >= 2]):
        members = s1.campaign == c
        recipients = set(s1.recipients[members])
        assert len(recipients) == 1  # a campaign goes to one recipient
        owners.append(recipients.pop())
        # positions count the campaign's arrivals in stream order
        assert s1.campaign_position[members].tolist() == list(range(members.sum()))
    assert len(set(owners)) == 3  # each campaign to a recipient of its own
    assert (s1.campaign_position[~ys] == -1).all()
    assert s1.later_in_campaign.sum() == 12 - 3 and s1.first_in_campaign.sum() == 3
    # about one recipient per 10 legit messages, each holding some of them
    assert s1.describe()["recipients"] >= 5


def test_novel_campaigns_drop_only_frauds_near_a_held_out_campaign():
    X, y = _held_out()
    stream = build_stream(X, y, seed=0)
    rng = np.random.default_rng(9)
    center = X[stream.rows[stream.campaign_size == 5][0]]  # the 5-message campaign
    single = X[stream.rows[(stream.campaign_size == 1)][0]]  # a single fraud
    train_X = np.vstack(
        [
            _near(center, 3, 0.02, rng),  # frauds of the campaign: dropped
            _near(center, 2, 0.02, rng),  # legit look-alikes: kept
            _near(single, 2, 0.02, rng),  # frauds like a single held-out fraud: kept
            unit_vectors(5, DIM, 77),
        ]
    )
    train_y = np.r_[np.ones(3, bool), np.zeros(2, bool), np.ones(2, bool), np.zeros(5, bool)]
    train = Split(Dataset([f"t{i}" for i in range(12)], train_y, [None] * 12), train_X)
    kept, dropped = without_campaigns(train, X, stream, 0.75)
    assert dropped == 3 and kept.data.texts == [f"t{i}" for i in range(3, 12)]


def _synthetic_detector() -> tuple[Detector, np.ndarray, np.ndarray]:
    """A parameter-free detector whose bank knows none of the held-out campaigns."""
    X, y = _held_out()
    bank = ReferenceIndex("m", DIM)
    frauds, legit = unit_vectors(20, DIM, 50), unit_vectors(40, DIM, 51)
    bank.add([LabeledText(f"f{i}", "fraud", "lottery") for i in range(20)], frauds, "t")
    bank.add([LabeledText(f"l{i}", "legit", None) for i in range(40)], legit, "t")
    params = ScorerSettings(temperature=0.05, null_similarity=0.5, threshold=0.5)
    return Detector(None, bank, params), X, y


def test_history_with_an_unreachable_min_score_is_exactly_history_off():
    detector, X, y = _synthetic_detector()
    stream = build_stream(X, y, seed=3)
    texts = [f"t{i}" for i in range(len(y))]
    off = replay(detector, stream, X, texts, None)
    never = HistorySettings.model_construct(**{**HistorySettings().model_dump(), "min_score": 1.01})
    assert np.array_equal(replay(detector, stream, X, texts, never), off)
    # ...while a reachable one changes the scores: the later messages of a campaign the
    # bank does not know attend to their recipient's earlier ones (as whole fraud keys:
    # soft values would carry their low scores, fraud/scoring/history.py).
    settings = HistorySettings(min_score=0.0, weight=4.0, soft_values=False)
    on = replay(detector, stream, X, texts, settings)
    later = stream.later_in_campaign
    assert (on[later] > off[later] + 0.3).all()
    # a recipient's first message has no history to attend to
    _, first_to_recipient = np.unique(stream.recipients.astype(str), return_index=True)
    assert np.array_equal(on[first_to_recipient], off[first_to_recipient])


def test_had_history_follows_earlier_scores_of_the_same_recipient():
    detector, X, y = _synthetic_detector()
    stream = build_stream(X, y, seed=3)
    settings = HistorySettings(min_score=0.5)
    scores = np.zeros(len(stream))
    first = int(np.flatnonzero(stream.first_in_campaign)[0])
    scores[first] = 0.6
    flags = had_history(stream, scores, settings)
    same = stream.recipients == stream.recipients[first]
    after = np.arange(len(stream)) > first
    assert np.array_equal(flags, same & after)


def test_stream_metrics_count_later_first_and_legit_with_history():
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.3])
    later = np.array([0, 1, 1, 0, 0, 0], bool)
    first = np.array([1, 0, 0, 0, 0, 0], bool)
    with_history = np.array([0, 1, 1, 1, 1, 0], bool)
    m = stream_metrics(y, scores, scores >= 0.5, later, first, with_history)
    assert m["later_campaign"] == {"n": 2, "alerts": 1, "rate": 0.5}
    assert m["first_of_campaign"] == {"n": 1, "alerts": 1, "rate": 1.0}
    assert m["legit_after_history"] == {"n": 2, "alerts": 1, "rate": 0.5}
    assert m["confusion"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert (
        stream_metrics(y, scores, scores >= 0.5, later, first, None)["legit_after_history"] is None
    )


def test_choose_setting_prefers_f1_then_later_recall_then_conservative():
    def m(f1, later, fp):
        return {"f1": f1, "later_campaign": {"rate": later}, "confusion": {"fp": fp}}

    grid = [(0.3, 1.0), (0.5, 1.0), (0.5, 2.0)]
    metrics = {
        setting_name(0.3, 1.0): m(0.90, 0.9, 3),
        setting_name(0.5, 1.0): m(0.95, 0.8, 3),
        setting_name(0.5, 2.0): m(0.95, 0.8, 3),
    }
    assert choose_setting(metrics, grid) == (0.5, 1.0)  # tie: the lower weight
    metrics[setting_name(0.5, 2.0)] = m(0.95, 0.85, 3)
    assert choose_setting(metrics, grid) == (0.5, 2.0)


def test_the_protocol_tunes_on_the_first_folds_only():
    rng = np.random.default_rng(0)
    parts = [_held_out(seed) for seed in range(4)]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    data = Dataset(
        [distinct_tail(i) for i in range(len(y))], y, ["lottery" if f else None for f in y]
    )
    fitted_on: list[int] = []

    def fit(train: Split, encoder, seed):
        fitted_on.append(len(train.data.y))
        index, _ = split_index(train)
        return Detector(encoder, index, ScorerSettings(threshold=0.5 + 0.1 * rng.random()))

    grid = [(0.3, 1.0), (0.9, 4.0)]
    report = replay_evaluate(data, X, None, folds=4, seed=1, tuning_folds=2, grid=grid, fit=fit)
    assert len(fitted_on) == 4 and all(n < len(y) for n in fitted_on)
    assert set(report["tuning"]) == {OFF, *(setting_name(*p) for p in grid)}
    assert [f["fold"] for f in report["tuning"][OFF]["per_fold"]] == [1, 2]
    chosen = (report["chosen"]["min_score"], report["chosen"]["weight"])
    assert chosen == choose_setting(report["tuning"], grid)
    evaluation = report["evaluation"]
    assert [f["fold"] for f in evaluation["history on"]["per_fold"]] == [3, 4]
    assert (
        evaluation[OFF]["legit_after_history"]["n"]
        == (evaluation["history on"]["legit_after_history"]["n"])
    )  # compared on the same messages
    assert report["tuning"][OFF]["legit_after_history"] is None
    json.dumps(report)  # what the CLI writes
    text = replay_report_text(report)  # what the CLI prints
    assert len(text.folds) == 4 and text.folds[0].startswith("fold 1: ")
    tuning, evaluation = text.tables
    assert tuning.columns == evaluation.columns == COLUMNS
    assert [row[0] for row in tuning.rows] == [
        name + (" *" if name == setting_name(*chosen) else "") for name in report["tuning"]
    ]
    assert all(len(row) == len(COLUMNS) for row in tuning.rows + evaluation.rows)
    assert "history off vs on" in evaluation.title and setting_name(*chosen) in evaluation.title
    assert text.changes.startswith("history on vs off, message by message")


def test_the_learned_variant_as_a_detector_scores_like_the_variant():
    rng = np.random.default_rng(0)
    y = rng.random(80) < 0.4
    X = unit_vectors(80, DIM, 4) + np.where(y[:, None], 0.9, 0.0) * np.eye(DIM)[0]
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    texts = [f"{'win cash' if f else 'see you'} {distinct_tail(i)}" for i, f in enumerate(y)]
    split = Split(Dataset(texts, y, ["unspecified" if f else None for f in y]), X)
    variant = LearnedAttentionVariant(epochs=3)
    variant.fit(split.take(np.arange(60)))
    detector = variant.detector(None, 0.42)
    test = split.take(np.arange(60, 80))
    assessments = detector.score(test.X, test.data.texts).assessments
    assert detector.params.threshold == 0.42 and detector.head is variant.head
    assert np.allclose([a.score for a in assessments], variant.score(test), atol=1e-6)


def test_cli_bad_path_is_one_line_and_exit_2(capsys, tmp_path):
    from workers.cli.main import main

    code = main(["evaluate-replay", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fraud: error:") and "no such file" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("folds", ["2"])
def test_cli_needs_more_folds_than_tuning_folds(capsys, tmp_path, folds):
    from workers.cli.main import main

    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nwin cash,spam\nsee you,ham\n")
    code = main(["evaluate-replay", "--csv", str(csv), "--folds", folds, "--out", str(tmp_path)])
    assert code == 2 and "tuning folds" in capsys.readouterr().err
