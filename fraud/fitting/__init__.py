"""Fitting the scorer on an index's own references (`fraud calibrate`, `fraud train`):
T and tau, the key similarity, the learned head and the alert thresholds. Production
code: it never imports the evaluation harness (fraud.quality)."""

from fraud.fitting.calibration import (
    attention_fraud_scores,
    choose_threshold,
    fit_key_similarity,
    fit_temperature_and_null,
)
from fraud.fitting.commands import calibrate, index_split, train
from fraud.fitting.folds import (
    Dataset,
    Split,
    SplitScorer,
    dataset_folds,
    grouped_folds,
    inner_scores,
    near_duplicate_groups,
    near_duplicate_key,
    split_index,
)
from fraud.fitting.train_head import HeadOnSplit, head_inner_scores, train_head, train_over_index

__all__ = (
    "Dataset",
    "HeadOnSplit",
    "Split",
    "SplitScorer",
    "attention_fraud_scores",
    "calibrate",
    "choose_threshold",
    "dataset_folds",
    "fit_key_similarity",
    "fit_temperature_and_null",
    "grouped_folds",
    "head_inner_scores",
    "index_split",
    "inner_scores",
    "near_duplicate_groups",
    "near_duplicate_key",
    "split_index",
    "train",
    "train_head",
    "train_over_index",
)
