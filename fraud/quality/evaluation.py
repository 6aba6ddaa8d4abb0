"""`fraud evaluate`: detection quality by stratified k-fold cross-validation.

Protocol, the same for every variant (the attention scorers and the baselines):
  1. the labeled texts are deduplicated after normalization (a duplicate across folds leaks);
  2. stratified k-fold with a fixed seed, near-duplicate groups kept whole (a campaign's
     copies that differ in a link or an amount never straddle folds); in each fold the
     training part is all a variant sees: it becomes the reference index, fits T and
     tau, trains a head, fits a baseline;
  3. the alert threshold is chosen on the training part only, from inner cross-validated
     scores (3 inner folds), never on the held-out part (`inner_folds=0` skips this and
     decides at 0.5: PR-AUC, ROC-AUC and recall at 1% FPR rank scores and do not use it,
     and it quarters the cost);
  4. the held-out part is scored once; metrics are computed on all held-out scores pooled,
     with the per-fold spread beside them.

The variants come as an argument (`evaluate(..., variants=evaluation_variants())`, from
fraud/quality/variants.py), as sentence-transformers' evaluators receive the model: this
module imports none of them.

Several encoders can be compared in one run (`fraud evaluate --models`): every variant
that reads embeddings runs once per encoder, on the same folds; the text-only baselines
run once. A large set can be cut to a stratified sample first (`--sample`).
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from fraud.datasets import UNSPECIFIED_CATEGORY
from fraud.errors import ConfigError
from fraud.fitting.calibration import choose_threshold
from fraud.fitting.folds import Dataset, Split, SplitScorer, dataset_folds, inner_scores


class Variant(SplitScorer, Protocol):
    """One of the scorers `fraud evaluate` compares: a name, fit(train), score(test)."""

    name: str


def classification_metrics(
    y: np.ndarray, scores: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    y, predicted = np.asarray(y, bool), np.asarray(predicted, bool)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, predicted, average="binary", zero_division=0
    )
    fpr, tpr, _ = roc_curve(y, scores)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[False, True]).ravel()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(y, scores)),
        "pr_auc": float(average_precision_score(y, scores)),
        "recall_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
        "false_alert_rate": float(fp / max(fp + tn, 1)),  # share of legit messages alerted
        "confusion": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)},
    }


def recall_by_category(
    y: np.ndarray, predicted: np.ndarray, categories: Sequence[str | None]
) -> dict[str, float]:
    cats = np.array([c or "" for c in categories])
    return {
        str(c): float(predicted[(cats == c) & y].mean())
        for c in sorted(set(cats[y]))
        if c and c != UNSPECIFIED_CATEGORY
    }


@dataclass
class VariantResult:
    name: str
    scores: np.ndarray  # held-out score of every message (pooled over folds)
    predicted: np.ndarray  # held-out decision at the fold's own threshold
    thresholds: list[float] = field(default_factory=list)
    fold_metrics: list[dict[str, Any]] = field(default_factory=list)
    score_ms: list[float] = field(default_factory=list)  # per-message times, one at a time
    fitted: list[dict[str, Any]] = field(default_factory=list)


def cross_validate(
    dataset: Dataset,
    X: np.ndarray | Mapping[str, np.ndarray],
    variants: dict[str, Callable[[], Variant]],
    *,
    folds: int = 5,
    seed: int = 13,
    inner_folds: int = 3,
    threshold_rule: dict[str, float] | None = None,
    timing_sample: int = 100,
    on_fold: Callable[[int, str], None] | None = None,
) -> dict[str, VariantResult]:
    """X: one embedding matrix for every variant, or a mapping from variant name to its own
    (variants over different encoders); the folds are the same for all."""
    wholes = {name: Split(dataset, X[name] if isinstance(X, Mapping) else X) for name in variants}
    n = len(dataset.y)
    results = {name: VariantResult(name, np.zeros(n), np.zeros(n, dtype=bool)) for name in variants}
    rule = threshold_rule or {}
    for fold, (train_idx, test_idx) in enumerate(dataset_folds(dataset, folds, seed)):
        for name, make in variants.items():
            train, test = wholes[name].take(train_idx), wholes[name].take(test_idx)
            if on_fold:
                on_fold(fold, name)
            result = results[name]
            threshold = (
                choose_threshold(inner_scores(make, train, inner_folds, seed), train.data.y, **rule)
                if inner_folds
                else 0.5  # no threshold fitted: the ranking metrics do not need one
            )
            variant = make()
            variant.fit(train)
            scores = variant.score(test)
            result.scores[test_idx] = scores
            result.predicted[test_idx] = scores >= threshold
            result.thresholds.append(threshold)
            result.fold_metrics.append(
                classification_metrics(test.data.y, scores, scores >= threshold)
            )
            result.fitted.append(getattr(variant, "fitted", {}))
            sample = test.take(np.arange(min(timing_sample, len(test_idx))))
            for i in range(len(sample.data.y)):
                one = sample.take(np.array([i]))
                start = time.perf_counter()
                variant.score(one)
                result.score_ms.append((time.perf_counter() - start) * 1000)
    return results


def summarize(result: VariantResult, dataset: Dataset) -> dict[str, Any]:
    pooled = classification_metrics(dataset.y, result.scores, result.predicted)
    per_fold = {
        key: float(np.std([m[key] for m in result.fold_metrics]))
        for key in ("f1", "pr_auc", "recall_at_1pct_fpr")
    }
    times = np.array(result.score_ms)
    return {
        **pooled,
        "fold_std": per_fold,
        "recall_by_category": recall_by_category(dataset.y, result.predicted, dataset.categories),
        "thresholds": result.thresholds,
        "fitted": result.fitted,
        "score_ms_mean": float(times.mean()) if len(times) else None,
        "score_ms_p99": float(np.percentile(times, 99)) if len(times) else None,
    }


def plot_report(
    results: dict[str, VariantResult], dataset: Dataset, shipped: str, out_dir: Path
) -> list[Path]:
    """PR curves, ROC curves (all variants) and the shipped scorer's score histograms."""
    import matplotlib  # lazily: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    y = dataset.y
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name, r in results.items():
        p, rc, _ = precision_recall_curve(y, r.scores)
        ax.plot(
            rc,
            p,
            label=f"{name} (AP {average_precision_score(y, r.scores):.4f})",
            lw=2.2 if name == shipped else 1.2,
        )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall, held-out folds pooled",
        xlim=(0.5, 1.0),
        ylim=(0.5, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    paths.append(_save(plt, fig, out_dir / "pr_curve.png"))

    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name, r in results.items():
        fpr, tpr, _ = roc_curve(y, r.scores)
        ax.plot(
            fpr,
            tpr,
            label=f"{name} (AUC {roc_auc_score(y, r.scores):.4f})",
            lw=2.2 if name == shipped else 1.2,
        )
    ax.axvline(0.01, color="grey", ls=":", lw=1)
    ax.set(
        xscale="log",
        xlim=(1e-3, 1),
        ylim=(0.5, 1.01),
        xlabel="false-positive rate (log)",
        ylabel="recall",
        title="ROC, held-out folds pooled (dotted: 1% FPR)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(plt, fig, out_dir / "roc_curve.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    s = results[shipped].scores
    bins = np.linspace(0, 1, 41)
    ax.hist(s[~y], bins=bins, alpha=0.6, label=f"legit (n={int((~y).sum())})", color="tab:blue")
    ax.hist(s[y], bins=bins, alpha=0.6, label=f"fraud (n={int(y.sum())})", color="tab:red")
    for t in results[shipped].thresholds:
        ax.axvline(t, color="black", ls=":", lw=0.8)
    ax.set(
        yscale="log",
        xlabel="score",
        ylabel="messages (log)",
        title=f"{shipped}: held-out scores by label (dotted: fold thresholds)",
    )
    ax.legend()
    paths.append(_save(plt, fig, out_dir / "score_histogram.png"))
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def encoder_timing(encoder, texts: Sequence[str], n: int = 50) -> dict[str, float]:
    """Per-message encoding time, one message at a time (what a worker pays per message)."""
    times = []
    for text in texts[:n]:
        start = time.perf_counter()
        encoder.encode([text])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "encode_ms_mean": float(np.mean(times)),
        "encode_ms_p99": float(np.percentile(times, 99)),
    }


def select_variants(
    variants: Mapping[str, Callable[[], Variant]], names: Sequence[str] | None
) -> dict[str, Callable[[], Variant]]:
    """The variants named (all when `names` is empty), in their own order."""
    if not names:
        return dict(variants)
    unknown = set(names) - set(variants)
    if unknown:
        raise ConfigError(f"unknown variants {sorted(unknown)}: choose from {list(variants)}")
    return {k: v for k, v in variants.items() if k in names}


def evaluate(
    dataset: Dataset,
    X: np.ndarray | Mapping[str, np.ndarray],
    *,
    variants: Mapping[str, Callable[[], Variant]],
    folds: int,
    seed: int,
    threshold_rule: dict[str, float],
    variant_names: Sequence[str] | None = None,
    on_fold: Callable[[int, str], None] | None = None,
    inner_folds: int = 3,
) -> tuple[dict[str, Any], dict[str, VariantResult]]:
    """Cross-validate every variant of `variants` (name -> a maker of a fresh one:
    evaluation_variants(), fraud/quality/variants.py), or those named, and summarize each.

    X: the embeddings, or a mapping from encoder name to embeddings; then each variant
    that reads embeddings runs once per encoder, as "variant [encoder]", and the others
    (the TF-IDF baselines) once.
    """
    variants = select_variants(variants, variant_names)
    per_variant: np.ndarray | dict[str, np.ndarray] = X
    if isinstance(X, Mapping):
        expanded, per_variant = {}, {}
        first = next(iter(X.values()))
        for name, make in variants.items():
            if not getattr(make, "uses_embeddings", True):
                expanded[name], per_variant[name] = make, first
                continue
            for model, embeddings in X.items():
                expanded[f"{name} [{model}]"] = make
                per_variant[f"{name} [{model}]"] = embeddings
        variants = expanded
    results = cross_validate(
        dataset,
        per_variant,
        variants,
        folds=folds,
        seed=seed,
        threshold_rule=threshold_rule,
        on_fold=on_fold,
        inner_folds=inner_folds,
    )
    report = {
        "dataset": {
            "messages": len(dataset.y),
            "fraud": int(dataset.y.sum()),
            "duplicates_removed": dataset.duplicates_removed,
        },
        "protocol": {
            "folds": folds,
            "seed": seed,
            "inner_folds": inner_folds,
            "threshold_rule": (threshold_rule or {"max": "f1"}) if inner_folds else {"fixed": 0.5},
        },
        "variants": {name: summarize(r, dataset) for name, r in results.items()},
    }
    return report, results
