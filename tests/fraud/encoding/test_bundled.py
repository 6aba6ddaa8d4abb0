"""The adapted English model: the shipped delta merged into the bundled weights."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fraud.config import Settings
from fraud.encoding.bundled import (
    ADAPTER_INFO,
    BUNDLED_MODEL_NAME,
    DELTA_FILE,
    adapted_model_dir,
    bundled_model_path,
    delta_digest,
)
from fraud.errors import ConfigError

QUERY = "encoder.layer.0.attention.self.query"


def _delta(directory, b_value: float, rank: int = 2, alpha: float = 4.0):
    """A delta with one adapter on layer 0's query projection."""
    directory.mkdir(parents=True, exist_ok=True)
    a = torch.arange(rank * 384, dtype=torch.float32).reshape(rank, 384) / 1e4
    b = torch.full((384, rank), b_value)
    save_file({f"{QUERY}.A": a, f"{QUERY}.B": b}, str(directory / DELTA_FILE))
    (directory / ADAPTER_INFO).write_text(json.dumps({"rank": rank, "alpha": alpha}))
    return a, b, alpha / rank


def test_the_merged_weight_is_the_base_plus_the_scaled_low_rank_product(tmp_path):
    a, b, scale = _delta(tmp_path / "delta", 0.01)
    model = adapted_model_dir(tmp_path / "models", tmp_path / "delta")
    base = load_file(str(bundled_model_path() / "model.safetensors"))
    merged = load_file(str(model / "model.safetensors"))
    expected = base[f"{QUERY}.weight"] + scale * b @ a
    assert torch.allclose(merged[f"{QUERY}.weight"], expected, atol=1e-7)
    assert not torch.equal(merged[f"{QUERY}.weight"], base[f"{QUERY}.weight"])
    unchanged = [k for k in base if k != f"{QUERY}.weight"]
    assert all(torch.equal(merged[k], base[k]) for k in unchanged)
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()


def test_the_model_directory_is_named_by_the_delta_and_made_once(tmp_path):
    _delta(tmp_path / "one", 0.01)
    _delta(tmp_path / "two", 0.02)
    first = adapted_model_dir(tmp_path / "models", tmp_path / "one")
    assert first.name.endswith(delta_digest(tmp_path / "one"))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert adapted_model_dir(tmp_path / "models", tmp_path / "one") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert adapted_model_dir(tmp_path / "models", tmp_path / "two") != first


def test_a_missing_delta_is_one_readable_line(tmp_path):
    with pytest.raises(ConfigError, match="adapted encoder's delta is missing.*ENGLISH_MODEL"):
        adapted_model_dir(tmp_path / "models", tmp_path / "nowhere")


REDELIVERY = [
    "Your parcel could not be delivered. Pay the £1.99 redelivery fee at parcelgo-fee.com",
    "We were unable to deliver your package; settle a small £2 charge here: pgo-pay.net",
    "ParcelGo: your parcel was delivered to your safe place at 14:02. No action needed.",
]


@pytest.mark.model
def test_the_shipped_delta_pulls_scams_together_and_away_from_genuine_notices():
    """FRAUD_ENGLISH_MODEL=adapted merges the shipped adapters in; base (the default) is the
    published model. The adapters pull a scam towards another scam and away from a genuine
    notice of the same kind (texts written for this test, in no training file), and turn
    round the published model's known weakness (docs/limits.md, test_encoder.py's strict
    xfail): a redelivery scam nearer a genuine delivery notice than its own paraphrase."""
    from fraud.encoding.encoder import Encoder, english_model_path

    assert english_model_path(Settings()) is None  # the default: the published model
    adapted = Encoder(english_model_path(Settings(english_model="adapted")))
    base = Encoder(None)
    assert base.name == BUNDLED_MODEL_NAME
    assert adapted.name.startswith("all-MiniLM-L6-v2-fraud-") and adapted.name != base.name
    texts = [
        "USPS: your parcel is on hold, confirm your address at usps-redo-parcel.info to release it",
        "Your bank account is suspended. Verify your details at secure-bnk-login.co to restore",
        "Your USPS package was delivered today at 2:14 pm to the front door. Track it in the app",
    ]

    def margin(encoder, texts):
        X = encoder.encode(texts)
        return float(X[0] @ X[1] - X[0] @ X[2])  # scam-scam minus scam-genuine

    assert margin(adapted, texts) > margin(base, texts) + 0.1
    assert margin(base, REDELIVERY) < 0 < margin(adapted, REDELIVERY)
