"""`fraud evaluate-replay`: the recipient's history as keys, measured on a replayed stream.

The public labeled sets have no recipients and no time, so the stream is *simulated* from
each fold's held-out part; what it measures is how the scoring path behaves on such a
stream, not how often real campaigns hit one person.

The simulated stream of one fold (deterministic for a seed):
  1. campaigns: the held-out frauds are grouped into clusters of near-duplicates, the
     connected components of the graph "embedding cosine >= CAMPAIGN_SIMILARITY". 0.75
     keeps one template's variants together (the "URGENT! ... won a £2000 prize" family,
     the "video handset" offers); at 0.7 unrelated prize spam starts to chain into one
     component, at 0.85 most campaigns break into pairs.
  2. recipients: about one per LEGIT_PER_RECIPIENT legit messages, and at least one per
     multi-message campaign. Each multi-message campaign goes, whole, to a recipient of
     its own; each single fraud and each legit message to a recipient drawn at random
     (so campaign recipients also receive legit messages, some after the campaign began).
  3. time: every message draws a uniform arrival time in a 24-hour window; a recipient's
     campaign messages therefore arrive in random order, interleaved with their legit ones.
     Timestamps strictly increase in stream order (well inside the history's TTL).

Per fold, the detector is the learned attention head of `fraud evaluate` ("learned
attention", without the n-gram term of the shipped variant: see fit_detector; the head
trained on the training part, over an index of the training part), with its
alert threshold chosen by inner cross-validation on the training part. The stream is
scored in order with the history off (bank keys only) and on (fraud/scoring/history.py), for a
grid of (min_score, weight). Honest tuning: the setting is chosen on the streams of the
first TUNING_FOLDS folds only, then reported, with the history off beside it, on the
remaining folds.

With novel_campaigns (`--novel-campaigns`), each fold's training part also loses every
fraud within CAMPAIGN_SIMILARITY of a held-out multi-message campaign, so those campaigns
are unknown to the bank and to the head: a stress test of what the history is for (by
default the bank of the training part already knows most of UCI's spam templates).
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from fraud.config import HistorySettings
from fraud.errors import ConfigError
from fraud.fitting.calibration import choose_threshold
from fraud.fitting.folds import Dataset, Split, dataset_folds, inner_scores
from fraud.quality.evaluation import classification_metrics
from fraud.quality.variants import LearnedAttentionVariant
from fraud.scoring.detector import Detector
from fraud.scoring.history import Arrival, HistoryScorer, RecipientHistory

CAMPAIGN_SIMILARITY = 0.75
LEGIT_PER_RECIPIENT = 10
STREAM_START_MS = 1_700_000_000_000
STREAM_SPAN_MS = 24 * 3600 * 1000
GRID_MIN_SCORE = (0.3, 0.5, 0.7, 0.9)
GRID_WEIGHT = (0.5, 1.0, 2.0, 4.0)
TUNING_FOLDS = 2
INNER_FOLDS = 3
OFF = "history off"


def campaigns(X: np.ndarray, similarity: float = CAMPAIGN_SIMILARITY) -> np.ndarray:
    """Campaign label of each row: connected components of cosine >= similarity (rows are
    L2-normalized embeddings). Labels are numbered in order of each component's first row."""
    n = len(X)
    if n == 0:
        return np.zeros(0, np.int64)
    linked = sparse.csr_matrix(X @ X.T >= similarity)
    _, labels = connected_components(linked, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # renumber by first appearance
    return rank[inverse].astype(np.int64)


@dataclass(frozen=True)
class Stream:
    """A fold's held-out messages in arrival order; every array is aligned with `rows`."""

    rows: np.ndarray  # position of each message in the held-out part
    recipients: np.ndarray  # object: recipient id
    at_ms: np.ndarray  # int64, strictly increasing
    campaign: np.ndarray  # campaign id of a fraud (a single fraud is its own), -1 legit
    campaign_size: np.ndarray  # messages in that campaign, 0 for legit
    campaign_position: np.ndarray  # 0 for a campaign's first arrival, 1, 2...; -1 legit

    def __len__(self) -> int:
        return len(self.rows)

    def arrivals(self) -> list[Arrival]:
        return [
            Arrival(message_id=f"m{row}", recipient=str(r), at_ms=int(t), seq=i)
            for i, (row, r, t) in enumerate(
                zip(self.rows, self.recipients, self.at_ms, strict=True)
            )
        ]

    @property
    def later_in_campaign(self) -> np.ndarray:
        """The 2nd and later arrivals of multi-message campaigns."""
        return (self.campaign_size >= 2) & (self.campaign_position >= 1)

    @property
    def first_in_campaign(self) -> np.ndarray:
        """The first arrival of each multi-message campaign."""
        return (self.campaign_size >= 2) & (self.campaign_position == 0)

    def describe(self) -> dict[str, int]:
        sizes = np.bincount(self.campaign[self.campaign >= 0], minlength=1)
        return {
            "messages": len(self),
            "fraud": int((self.campaign >= 0).sum()),
            "recipients": len(set(self.recipients.tolist())),
            "campaigns": int((sizes >= 1).sum()),
            "multi_message_campaigns": int((sizes >= 2).sum()),
            "largest_campaign": int(sizes.max()),
            "later_campaign_messages": int(self.later_in_campaign.sum()),
        }


def build_stream(
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int | Sequence[int],
    similarity: float = CAMPAIGN_SIMILARITY,
    legit_per_recipient: int = LEGIT_PER_RECIPIENT,
) -> Stream:
    """The simulated stream of one held-out part (see the module docstring)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, bool)
    n = len(y)
    fraud_rows = np.flatnonzero(y)
    campaign = np.full(n, -1, np.int64)
    campaign[fraud_rows] = campaigns(X[fraud_rows], similarity)
    sizes = np.bincount(campaign[fraud_rows], minlength=1)
    multi = np.flatnonzero(sizes >= 2)
    n_recipients = max(len(multi), -(-int((~y).sum()) // legit_per_recipient), 1)
    recipient = rng.integers(n_recipients, size=n)  # legit and single frauds: anyone
    owner = rng.permutation(n_recipients)[: len(multi)]  # one recipient per campaign
    for c, r in zip(multi, owner, strict=True):
        recipient[campaign == c] = r
    arrival = rng.random(n)
    order = np.argsort(arrival, kind="stable")
    at_ms = STREAM_START_MS + (arrival[order] * STREAM_SPAN_MS).astype(np.int64) + np.arange(n)
    campaign_o = campaign[order]
    position = np.full(n, -1, np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(campaign_o.tolist()):
        if c >= 0:
            position[i] = seen[c] = seen.get(c, -1) + 1
    width = len(str(n_recipients - 1))
    return Stream(
        rows=order,
        recipients=np.array([f"r{r:0{width}d}" for r in recipient[order]], dtype=object),
        at_ms=at_ms,
        campaign=campaign_o,
        campaign_size=np.where(campaign_o >= 0, sizes[np.maximum(campaign_o, 0)], 0),
        campaign_position=position,
    )


def replay(
    detector: Detector,
    stream: Stream,
    X: np.ndarray,
    texts: Sequence[str],
    history: HistorySettings | None,
) -> np.ndarray:
    """Fraud scores of the stream's messages in arrival order: history None scores with
    the bank's keys only; otherwise each recipient's history starts empty and grows as
    the stream is scored in order (fraud/scoring/history.py)."""
    queries = np.ascontiguousarray(X[stream.rows], dtype=np.float32)
    ordered = [texts[i] for i in stream.rows]
    store = RecipientHistory(history) if history is not None else None
    result = HistoryScorer(detector, store).score(stream.arrivals(), queries, ordered)
    return np.array([a.score for a in result.assessments], dtype=np.float64)


def had_history(stream: Stream, scores: np.ndarray, settings: HistorySettings) -> np.ndarray:
    """Whether each message's recipient already had a history entry when it arrived: an
    earlier message to them scored >= min_score, within the TTL. (The per-recipient cap
    keeps the newest entries, so it never empties a recipient's history.)"""
    ttl_ms = settings.ttl_s * 1000
    last: dict[str, int] = {}  # recipient -> time of their newest entry
    out = np.zeros(len(stream), bool)
    for i, (r, t) in enumerate(zip(stream.recipients.tolist(), stream.at_ms.tolist(), strict=True)):
        out[i] = r in last and last[r] >= t - ttl_ms
        if scores[i] >= settings.min_score:
            last[r] = t
    return out


def stream_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    later: np.ndarray,
    first: np.ndarray,
    legit_with_history: np.ndarray | None,
) -> dict[str, Any]:
    """The usual metrics (fraud/quality/evaluation.py), plus recall on campaigns' later and first
    messages and the false-positive rate on legit messages that met a history."""
    y, predicted = np.asarray(y, bool), np.asarray(predicted, bool)
    out = classification_metrics(y, scores, predicted)
    out["later_campaign"] = _rate(predicted, later & y)
    out["first_of_campaign"] = _rate(predicted, first & y)
    out["legit_after_history"] = (
        None if legit_with_history is None else _rate(predicted, legit_with_history & ~y)
    )
    return out


def _rate(predicted: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    n, k = int(mask.sum()), int((predicted & mask).sum())
    return {"n": n, "alerts": k, "rate": k / n if n else None}


@dataclass
class FoldStream:
    """One fold's stream with what each run scored."""

    fold: int
    threshold: float
    stream: Stream
    y: np.ndarray  # labels in stream order
    scores: dict[str, np.ndarray]
    with_history: dict[str, np.ndarray]  # legit-or-fraud messages that met a history, per run
    dropped_from_training: int = 0  # frauds removed from the training part (novel campaigns)

    def parts(self, run: str, subset_of: str | None = None) -> dict[str, np.ndarray]:
        """Arrays for pooling; subset_of: whose 'met a history' set to use (history off
        has none of its own: it is compared on the history-on run's set)."""
        s = self.stream
        hist = self.with_history.get(subset_of or run)
        return {
            "y": self.y,
            "scores": self.scores[run],
            "predicted": self.scores[run] >= self.threshold,
            "later": s.later_in_campaign,
            "first": s.first_in_campaign,
            "history": hist if hist is not None else np.zeros(len(s), bool),
            "has_history": np.array([hist is not None]),
        }


def pooled(folds: Sequence[FoldStream], run: str, subset_of: str | None = None) -> dict:
    parts = [f.parts(run, subset_of) for f in folds]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    metrics = stream_metrics(
        cat["y"],
        cat["scores"],
        cat["predicted"],
        cat["later"],
        cat["first"],
        cat["history"] if cat["has_history"].all() else None,
    )
    metrics["per_fold"] = [
        {
            "fold": f.fold + 1,
            **{
                k: v
                for k, v in stream_metrics(
                    p["y"], p["scores"], p["predicted"], p["later"], p["first"], None
                ).items()
                if k in ("f1", "pr_auc", "recall_at_1pct_fpr", "later_campaign")
            },
        }
        for f, p in zip(folds, parts, strict=True)
    ]
    return metrics


def paired(folds: Sequence[FoldStream], off: str, on: str) -> dict[str, Any]:
    """What switching the history on changed, message by message, at the fold thresholds,
    and how far it moved the scores of campaigns' later messages and of legit ones."""
    changes = dict.fromkeys(
        ("frauds_caught", "frauds_lost", "false_alerts_added", "false_alerts_removed"), 0
    )
    for f in folds:
        a, b = f.scores[off] >= f.threshold, f.scores[on] >= f.threshold
        changes["frauds_caught"] += int((f.y & b & ~a).sum())
        changes["frauds_lost"] += int((f.y & a & ~b).sum())
        changes["false_alerts_added"] += int((~f.y & b & ~a).sum())
        changes["false_alerts_removed"] += int((~f.y & a & ~b).sum())
    delta = np.concatenate([f.scores[on] - f.scores[off] for f in folds])
    later = np.concatenate([f.stream.later_in_campaign for f in folds])
    legit = ~np.concatenate([f.y for f in folds])
    changes["score_change_later_mean"] = float(delta[later].mean()) if later.any() else 0.0
    changes["score_change_later_max"] = float(delta[later].max()) if later.any() else 0.0
    changes["score_change_legit_max"] = float(delta[legit].max()) if legit.any() else 0.0
    return changes


def setting_name(min_score: float, weight: float) -> str:
    return f"min_score {min_score:g}, weight {weight:g}"


def choose_setting(metrics: dict[str, dict], grid: Sequence[tuple[float, float]]) -> tuple:
    """The best grid point on the tuning folds: F1 at the fold thresholds, then recall on
    campaigns' later messages, then fewer false alerts, then the more conservative setting
    (higher min_score, lower weight)."""

    def key(point: tuple[float, float]) -> tuple:
        m = metrics[setting_name(*point)]
        later = m["later_campaign"]["rate"] or 0.0
        return (round(m["f1"], 9), round(later, 9), -m["confusion"]["fp"], point[0], -point[1])

    return max(grid, key=key)


def without_campaigns(
    train: Split, test_X: np.ndarray, stream: Stream, similarity: float
) -> tuple[Split, int]:
    """The training part without the frauds that belong to a held-out multi-message
    campaign (cosine >= similarity to one of its messages): the bank, the head and its
    lexical term then know nothing of those campaigns, the case the history is for."""
    members = test_X[stream.rows[stream.campaign_size >= 2]]
    if not len(members):
        return train, 0
    near = (train.X @ members.T).max(axis=1) >= similarity
    drop = near & train.data.y
    return train.take(np.flatnonzero(~drop)), int(drop.sum())


def fit_detector(train: Split, encoder, seed: int, inner_folds: int = INNER_FOLDS) -> Detector:
    """The learned attention head of `fraud evaluate`, fitted on the training part only,
    with its threshold chosen for the best F1 on inner cross-validated scores of the
    training part.

    Without the key similarity's character n-gram term, which the shipped variant adds: a
    history key keeps no text, so its similarity is the dense cosine alone, and how history
    keys fare beside bank keys with the mixed similarity has not been measured."""
    threshold = choose_threshold(
        inner_scores(LearnedAttentionVariant, train, inner_folds, seed), train.data.y
    )
    variant = LearnedAttentionVariant()
    variant.fit(train)
    return variant.detector(encoder, threshold)


def replay_evaluate(
    dataset: Dataset,
    X: np.ndarray,
    encoder,
    *,
    folds: int = 5,
    seed: int = 0,
    tuning_folds: int = TUNING_FOLDS,
    similarity: float = CAMPAIGN_SIMILARITY,
    grid: Sequence[tuple[float, float]] | None = None,
    novel_campaigns: bool = False,
    fit: Callable[[Split, Any, int], Any] = fit_detector,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole protocol (module docstring); returns the report written as replay.json."""
    if not 1 <= tuning_folds < folds:
        raise ConfigError(f"need more folds ({folds}) than tuning folds ({tuning_folds})")
    grid = list(grid or [(m, w) for m in GRID_MIN_SCORE for w in GRID_WEIGHT])
    say = on_progress or (lambda _: None)
    whole = Split(dataset, X)
    done: list[FoldStream] = []
    chosen: tuple[float, float] | None = None
    tuning: dict[str, Any] = {}
    started = time.perf_counter()
    for fold, (train_idx, test_idx) in enumerate(dataset_folds(dataset, folds, seed)):
        role = "tuning" if fold < tuning_folds else "evaluation"
        say(f"fold {fold + 1}/{folds} ({role}): fitting the detector on the training part")
        train, test = whole.take(train_idx), whole.take(test_idx)
        stream = build_stream(test.X, test.data.y, seed=(seed, fold), similarity=similarity)
        dropped = 0
        if novel_campaigns:
            train, dropped = without_campaigns(train, test.X, stream, similarity)
        detector = fit(train, encoder, seed)
        points = grid if chosen is None else [chosen]
        say(f"fold {fold + 1}/{folds}: replaying {len(stream)} messages, {len(points) + 1} runs")
        scores = {OFF: replay(detector, stream, test.X, test.data.texts, None)}
        with_history: dict[str, np.ndarray] = {}
        for m, w in points:
            settings = HistorySettings(min_score=m, weight=w)
            name = setting_name(m, w)
            scores[name] = replay(detector, stream, test.X, test.data.texts, settings)
            with_history[name] = had_history(stream, scores[name], settings)
        done.append(
            FoldStream(
                fold,
                detector.params.threshold,
                stream,
                test.data.y[stream.rows],
                scores,
                with_history,
                dropped,
            )
        )
        if fold == tuning_folds - 1:
            tuning = {OFF: pooled(done, OFF)}
            tuning.update({setting_name(*p): pooled(done, setting_name(*p)) for p in grid})
            chosen = choose_setting(tuning, grid)
            say(f"chosen on the tuning folds: {setting_name(*chosen)}")
    on = setting_name(*chosen)  # set once the tuning folds are done (tuning_folds < folds)
    held = done[tuning_folds:]
    defaults = HistorySettings()
    return {
        "dataset": {
            "messages": len(dataset.y),
            "fraud": int(dataset.y.sum()),
            "duplicates_removed": dataset.duplicates_removed,
        },
        "protocol": {
            "stream": "simulated: the data has no recipients or times (fraud/quality/replay.py)",
            "folds": folds,
            "seed": seed,
            "tuning_folds": list(range(1, tuning_folds + 1)),
            "evaluation_folds": list(range(tuning_folds + 1, folds + 1)),
            "detector": "learned attention (dense keys), trained on each training part",
            "threshold": f"best F1 on {INNER_FOLDS} inner folds of the training part",
            "campaign_similarity": similarity,
            "novel_campaigns": novel_campaigns,
            "legit_per_recipient": LEGIT_PER_RECIPIENT,
            "stream_span_ms": STREAM_SPAN_MS,
            "history": {
                "max_per_recipient": defaults.max_per_recipient,
                "ttl_s": defaults.ttl_s,
            },
            "grid": [{"min_score": m, "weight": w} for m, w in grid],
            "selection": "F1 at the fold thresholds on the tuning folds pooled; ties: recall "
            "on later campaign messages, fewer false alerts, higher min_score, lower weight",
        },
        "thresholds": [f.threshold for f in done],
        "streams": [
            {
                "fold": f.fold + 1,
                **f.stream.describe(),
                "dropped_from_training": f.dropped_from_training,
            }
            for f in done
        ],
        "tuning": tuning,
        "chosen": {"min_score": chosen[0], "weight": chosen[1]},
        "evaluation": {
            OFF: pooled(held, OFF, subset_of=on),
            "history on": pooled(held, on),
        },
        "changes": paired(held, OFF, on),
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- the printed report -------------------------------------------------------------------
# As text, tables and sentences: `fraud evaluate-replay` (workers/cli) prints them.


COLUMNS = (
    "run",
    "PR-AUC",
    "R@1%FPR",
    "precision",
    "recall",
    "F1",
    "FP",
    "recall later",
    "recall 1st",
    "FPR legit w/ hist",
)


@dataclass(frozen=True)
class TextTable:
    """A table of the printed report: its title, columns (the first is the run's name,
    the others figures) and rows of cells."""

    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]


@dataclass(frozen=True)
class ReplayReportText:
    """The replay report as printed: a line per fold, the tables, then what changed."""

    folds: list[str]
    tables: list[TextTable]
    changes: str


def _fraction(r: dict | None) -> str:
    if r is None or r["rate"] is None:
        return "-"
    return f"{r['rate']:.3f} ({r['alerts']}/{r['n']})"


def _row(name: str, m: dict) -> list[str]:
    return [
        name,
        *(f"{m[k]:.4f}" for k in ("pr_auc", "recall_at_1pct_fpr", "precision", "recall", "f1")),
        str(m["confusion"]["fp"]),
        _fraction(m["later_campaign"]),
        _fraction(m["first_of_campaign"]),
        _fraction(m["legit_after_history"]),
    ]


def _fold_line(report: dict[str, Any], f: dict[str, Any]) -> str:
    return (
        f"fold {f['fold']}: {f['messages']} messages ({f['fraud']} fraud) to "
        f"{f['recipients']} recipients; {f['multi_message_campaigns']} multi-message "
        f"campaigns (largest {f['largest_campaign']}), {f['later_campaign_messages']} "
        f"later campaign messages; threshold {report['thresholds'][f['fold'] - 1]:.4f}"
        + (
            f"; {f['dropped_from_training']} campaign look-alikes dropped from training"
            if report["protocol"]["novel_campaigns"]
            else ""
        )
    )


def replay_report_text(report: dict[str, Any]) -> ReplayReportText:
    """The report of replay_evaluate as it is printed."""
    p = report["protocol"]
    tuning_folds = ", ".join(map(str, p["tuning_folds"]))
    eval_folds = ", ".join(map(str, p["evaluation_folds"]))
    chosen = setting_name(report["chosen"]["min_score"], report["chosen"]["weight"])
    tuning = TextTable(
        f"tuning folds {tuning_folds} pooled: the grid (simulated stream)",
        COLUMNS,
        [_row(name + (" *" if name == chosen else ""), m) for name, m in report["tuning"].items()],
    )
    evaluation = TextTable(
        f"evaluation folds {eval_folds} pooled: history off vs on ({chosen}, "
        f"chosen on folds {tuning_folds})",
        COLUMNS,
        [_row(name, m) for name, m in report["evaluation"].items()],
    )
    c = report["changes"]
    changes = (
        f"history on vs off, message by message: {c['frauds_caught']} frauds caught, "
        f"{c['frauds_lost']} lost, {c['false_alerts_added']} false alerts added, "
        f"{c['false_alerts_removed']} removed; score change on later campaign messages: mean "
        f"{c['score_change_later_mean']:+.4f}, max {c['score_change_later_max']:+.4f}; on "
        f"legit: max {c['score_change_legit_max']:+.4f}. 'recall later': 2nd and later messages of "
        "multi-message campaigns; 'FPR legit w/ hist': legit messages whose recipient had a "
        "history entry (for history off: the same messages as the history-on run)."
    )
    folds = [_fold_line(report, f) for f in report["streams"]]
    return ReplayReportText(folds, [tuning, evaluation], changes)
