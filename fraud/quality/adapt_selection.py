"""Choosing an adapted encoder on grouped inner folds of the training data, with the encoder
fine-tuned per fold (the protocol of docs/results/adapt-selection.json).

For each candidate recipe (an AdaptConfig, or None for the published model) and each of k
folds that keep near-duplicate groups whole: fine-tune the adapters on the fold's training
part only (fraud/fitting/adapt.py), embed every message with that encoder, fit the shipped
scorer (learned attention + char n-grams) on the training part and score the held-out
part. Every held-out message is then scored by an encoder that never saw it, as a new
message is, so the pooled held-out scores give an honest PR-AUC and an honest threshold for
1% FPR (an encoder fitted on every row would make its own training rows look easier).

The token gate: each fold's detector (its encoder, head and index, at the pooled
threshold) scores genuine messages plain and with codes appended (evasion.token_table);
a candidate may not raise more alerts than the published model does under the same
protocol. The dev set is not used here.
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from fraud.datasets import LabeledText
from fraud.encoding.bundled import ADAPTER_INFO, DELTA_FILE, adapted_model_dir, bundled_model_path
from fraud.encoding.cache import CachedEncoder
from fraud.encoding.encoder import Encoder
from fraud.errors import DataError
from fraud.fitting.adapt import AdaptConfig, adapt_encoder
from fraud.fitting.calibration import choose_threshold
from fraud.fitting.folds import Dataset, Split, dataset_folds
from fraud.quality.evaluation import classification_metrics
from fraud.quality.evasion import token_table
from fraud.quality.variants import LearnedAttentionVariant

SHIPPED_SCORER = "learned attention + char n-grams"


def _fold_encoder(rows, tr, base_X, config: AdaptConfig, work: Path) -> Encoder:
    """The encoder fine-tuned on rows[tr] alone, merged as the product merges its delta."""
    delta, summary = adapt_encoder(bundled_model_path(), [rows[i] for i in tr], base_X[tr], config)
    work.mkdir(parents=True, exist_ok=True)
    save_file(delta, str(work / DELTA_FILE))
    info = {"rank": config.rank, "alpha": config.alpha, **summary}
    (work / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return Encoder(adapted_model_dir(work / "models", work))


def run_candidate(
    rows: Sequence[LabeledText],
    config: AdaptConfig | None,
    probe: Sequence[str],
    work: Path,
    k: int = 3,
    seed: int = 13,
    cache_dir: Path = Path(".cache/embeddings"),
    log: Callable[[str], object] = print,
) -> dict:
    """One candidate through the k grouped folds: pooled held-out figures of the shipped
    scorer, the 1%-FPR threshold from those scores, and the token table of each fold's
    detector at that threshold on `probe` (genuine messages)."""
    data = Dataset.from_labeled(rows)
    kept = {r.text: r for r in rows}
    rows = [kept[t] for t in data.texts]
    base = Encoder(None)
    base_X = CachedEncoder(base, cache_dir).encode(data.texts)
    oof = np.zeros(len(data.y))
    fitted, started = [], time.time()
    for f, (tr, va) in enumerate(dataset_folds(data, k, seed)):
        t0 = time.time()
        encoder = (
            base if config is None else _fold_encoder(rows, tr, base_X, config, work / f"f{f}")
        )
        X = base_X if config is None else CachedEncoder(encoder, cache_dir).encode(data.texts)
        variant = LearnedAttentionVariant(fit_ngram=True)
        whole = Split(data, X)
        variant.fit(whole.take(tr))
        oof[va] = variant.score(whole.take(va))
        fitted.append((encoder, variant))
        log(f"fold {f}: {time.time() - t0:.0f} s")
    threshold = float(choose_threshold(oof, data.y, target_fpr=0.01))
    per_fold = [token_table(v.detector(e, threshold), probe) for e, v in fitted]
    tokens = {
        kind: {
            "alerts": sum(t[kind]["alerts"] for t in per_fold),
            "per_fold": [t[kind]["alerts"] for t in per_fold],
            "messages": len(probe) * len(per_fold),
        }
        for kind in per_fold[0]
    }
    m = classification_metrics(data.y, oof, oof >= threshold)
    return {
        "config": None if config is None else asdict(config),
        "scorer": SHIPPED_SCORER,
        "folds": k,
        "seed": seed,
        "n": len(data.y),
        "fraud": int(data.y.sum()),
        "pr_auc": round(m["pr_auc"], 4),
        "recall_at_1pct_fpr": round(m["recall_at_1pct_fpr"], 4),
        "oof_threshold_1pct_fpr": threshold,
        "at_threshold": {k: m[k] for k in ("precision", "recall", "false_alert_rate")},
        "tokens": tokens,
        "probe_alerts_with_codes": sum(
            v["alerts"] for kind, v in tokens.items() if kind != "plain"
        ),
        "seconds": round(time.time() - started, 1),
    }


# The recipes compared (docs/results/adapt-selection-v2.json). v1 is the first shipped
# adapter's, spelled out so that changing AdaptConfig's defaults leaves it as it was.
CANDIDATES: dict[str, AdaptConfig | None] = {
    "base": None,
    "v1": AdaptConfig(steps=200, same_category=0.5, token_augment=0.0),
    "v2": AdaptConfig(steps=200, same_category=1.0, token_augment=0.5),
    "v3": AdaptConfig(steps=200, same_category=1.0, token_augment=0.5, invariance_pairs=8),
}


def passes_gate(candidate: dict, base: dict) -> bool:
    """The token gate: no more alerts on the probe's coded messages than the published
    model raises under the same protocol."""
    return candidate["probe_alerts_with_codes"] <= base["probe_alerts_with_codes"]


def selected_threshold(path: Path, config: AdaptConfig) -> dict:
    """From a `fraud model select` result, what adapter.json records about the recipe
    fitted with `config`: its name, pooled figures and the 1%-FPR threshold of its per-fold
    fine-tuned held-out scores (a threshold no encoder that saw the scored rows gave).
    A result without that recipe is a DataError."""
    report = json.loads(Path(path).read_text())
    for name, row in report["candidates"].items():
        if row["config"] == asdict(config):
            return {
                "file": str(path),
                "recipe": name,
                "folds": row["folds"],
                "pr_auc": row["pr_auc"],
                "recall_at_1pct_fpr": row["recall_at_1pct_fpr"],
                "oof_threshold_1pct_fpr": row["oof_threshold_1pct_fpr"],
            }
    raise DataError(
        f"{path}: no recipe with this config ({asdict(config)}): run fraud model select"
    )
