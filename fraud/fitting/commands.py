"""`fraud calibrate` and `fraud train`: fit the scorer on an index's own references.

Both treat the references as the training data, each one masked out of its own keys,
and write what they fit into the index directory they loaded it from, so the worker and
`fraud score` use it as is: the manifest's scorer parameters are the parameter-free
scorer's (T, tau, the n-gram term and its threshold); a trained head and its own threshold
are head.json and its weights (fraud/scoring/head.py, trained by
fraud/fitting/train_head.py). Kept apart, so that a detector that cannot
use the head (trained on another version of the index) falls back to the parameter-free
scorer with that scorer's threshold, not the head's.
"""

from pathlib import Path
from typing import Any

import numpy as np

from fraud.errors import DataError
from fraud.fitting.calibration import attention_fraud_scores, choose_threshold, fit_key_similarity
from fraud.fitting.folds import Dataset, Split
from fraud.fitting.train_head import head_inner_scores, train_over_index
from fraud.index.files import write_index_dir
from fraud.index.keys import KeySimilarity
from fraud.index.reference_index import ReferenceIndex
from fraud.scoring.head import HeadConfig, load_head


def index_split(index: ReferenceIndex) -> tuple[Split, np.ndarray]:
    """The index's references as a training split, with their reference ids."""
    ids, vectors = index.vectors()
    refs = [index.reference(int(i)) for i in ids]
    data = Dataset(
        texts=[r.text for r in refs],
        y=np.array([r.label == "fraud" for r in refs]),
        categories=[r.category for r in refs],
    )
    if data.y.all() or not data.y.any():
        raise DataError(
            "fitting needs fraud and legit references in the index: add legit ones "
            "with `fraud index add`"
        )
    return Split(data, vectors), ids


def calibrate(
    index: ReferenceIndex,
    directory: Path,
    top_k: int,
    threshold_rule: dict[str, float],
    fit_ngram: bool = False,
) -> dict[str, Any]:
    """Fit T and tau by log-loss (with fit_ngram, the key similarity's n-gram term too:
    weight and n-gram lengths, weight 0 among the candidates), then the parameter-free
    scorer's threshold; and, when the directory has a head trained on this version of the
    index, the head's threshold by the same rule ("head_threshold", else None)."""
    split, ids = index_split(index)
    head = load_head(directory)
    dense = index.search(split.X, top_k, exclude_ids=ids)
    if fit_ngram:
        fitted = fit_key_similarity(index, dense, split.data.texts, split.data.y)
    else:
        fitted = fit_key_similarity(index, dense, split.data.texts, split.data.y, ranges=())
    similarity = KeySimilarity.of(fitted)
    t, tau = fitted["temperature"], fitted["null_similarity"]
    keys = index.search(
        split.X, top_k, exclude_ids=ids, texts=split.data.texts, similarity=similarity
    )
    scores = attention_fraud_scores(keys.similarities, keys.valid, keys.is_fraud, t, tau)
    threshold = choose_threshold(scores, split.data.y, **threshold_rule)
    index.scorer_params.update(
        temperature=round(t, 6),
        null_similarity=round(tau, 6),
        top_k=top_k,
        threshold=round(threshold, 6),
        **similarity.as_fields(),
    )
    if head is not None and head.index_version == index.version:
        head_scores = head_inner_scores(split, head.config)
        head.threshold = round(choose_threshold(head_scores, split.data.y, **threshold_rule), 6)
    else:
        head = None  # a stale head is carried as it is (write_index_dir says it is stale)
    write_index_dir(directory, index, head)
    return {**fitted, "threshold": threshold, "head_threshold": head and head.threshold}


def train(
    index: ReferenceIndex,
    directory: Path,
    config: HeadConfig,
    threshold_rule: dict[str, float],
    fit_ngram: bool = False,
) -> dict[str, Any]:
    """Train the attention head on all references (with fit_ngram, over a key similarity
    whose n-gram term is fitted first); its threshold from inner cross-validation, stored
    with the head (the manifest's scorer parameters stay the parameter-free scorer's)."""
    split, ids = index_split(index)
    head = train_over_index(
        config, index, split.X, ids, split.data.texts, split.data.y, fit_ngram, split.data.groups
    )
    config = head.config
    threshold = choose_threshold(head_inner_scores(split, config), split.data.y, **threshold_rule)
    head.threshold = round(threshold, 6)
    write_index_dir(directory, index, head)
    return {**head.fitted(), "threshold": threshold}
