"""Measuring the detector offline: `fraud evaluate` (cross-validated variants, or fitted
on training files and scored on a test file),
`fraud evaluate-replay` (the recipients' history on a simulated stream) and the evasion
table. Nothing in production imports it."""

from fraud.quality.evaluation import (
    Variant,
    VariantResult,
    classification_metrics,
    cross_validate,
    encoder_timing,
    evaluate,
    plot_report,
    select_variants,
)
from fraud.quality.evasion import (
    EvasionCase,
    EvasionRow,
    evasion_table,
    markdown_table,
    summary_by_kind,
)
from fraud.quality.replay import (
    TUNING_FOLDS,
    ReplayReportText,
    replay_evaluate,
    replay_report_text,
)
from fraud.quality.train_test import LabelMapping, train_test_evaluate
from fraud.quality.variants import (
    SHIPPED,
    AttentionVariant,
    LearnedAttentionVariant,
    evaluation_variants,
)

__all__ = (
    "SHIPPED",
    "LabelMapping",
    "TUNING_FOLDS",
    "AttentionVariant",
    "EvasionCase",
    "EvasionRow",
    "LearnedAttentionVariant",
    "ReplayReportText",
    "Variant",
    "VariantResult",
    "classification_metrics",
    "cross_validate",
    "encoder_timing",
    "evaluate",
    "evaluation_variants",
    "evasion_table",
    "markdown_table",
    "plot_report",
    "replay_evaluate",
    "replay_report_text",
    "select_variants",
    "summary_by_kind",
    "train_test_evaluate",
)
