"""Choosing the adapter's recipe (fraud/quality/adapt_selection.py): the gate and the
threshold adapter.json records. The per-fold run itself takes minutes per recipe on the real
rows (`fraud model select`, docs/quality.md); here only its bookkeeping."""

import json
from dataclasses import asdict

import pytest

from fraud.errors import DataError
from fraud.fitting.adapt import AdaptConfig
from fraud.quality.adapt_selection import CANDIDATES, passes_gate, selected_threshold


def _row(config, threshold, alerts):
    return {
        "config": None if config is None else asdict(config),
        "folds": 3,
        "pr_auc": 0.98,
        "recall_at_1pct_fpr": 0.9,
        "oof_threshold_1pct_fpr": threshold,
        "probe_alerts_with_codes": alerts,
    }


def test_the_threshold_recorded_is_the_recipe_with_the_same_config(tmp_path):
    path = tmp_path / "select.json"
    candidates = {
        "base": _row(None, 0.5, 10),
        "v1": _row(CANDIDATES["v1"], 0.2, 30),
        "v2": _row(CANDIDATES["v2"], 0.4, 8),
    }
    path.write_text(json.dumps({"candidates": candidates}))
    chosen = selected_threshold(path, CANDIDATES["v2"])
    assert chosen["recipe"] == "v2" and chosen["oof_threshold_1pct_fpr"] == 0.4
    with pytest.raises(DataError, match="no recipe with this config"):
        selected_threshold(path, AdaptConfig(steps=7))
    assert passes_gate(candidates["v2"], candidates["base"])
    assert not passes_gate(candidates["v1"], candidates["base"])


def test_v1_is_spelled_out_so_new_defaults_leave_it_alone():
    v1 = CANDIDATES["v1"]
    assert (v1.steps, v1.same_category, v1.token_augment) == (200, 0.5, 0.0)
    assert CANDIDATES["base"] is None
