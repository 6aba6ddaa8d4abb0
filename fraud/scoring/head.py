"""The learned attention head: attention of the message over its retrieved keys, trained.

For a query q and its keys k_1..k_m (retrieved references with similarity s_i and
label y_i), the head computes

    logit_i  = s_i / T_h + log w_i                            (per head h; w_i the key's weight)
    logit_0  = tau_h / T_h + n_h . q                          (a learned null key)
    a_h      = softmax(logit_0, logit_1..logit_m)
    readout_h = a_h0 v_h,null + sum_i a_hi v_h[y_i, c_i]      (learned values per label
                                                               and fraud category)
    score    = sigmoid(sum_h alpha_h readout_h + w . q + b)   (plus the lexical logit)

w and n_h stay zero unless the config's `query_terms` is on (HeadConfig).

Four heads start at temperatures from 0.03 to 0.15: sharp heads read the nearest keys,
broad ones the neighbourhood. Optional extra terms in the key logits (`pair`): a
low-rank bilinear (P q).(P k_i), or a small MLP on [q, k_i, q - k_i, q * k_i] as in the
Deep Interest Network; measured on the UCI folds, both overfit (see README, Quality).

It is trained (fraud/fitting/train_head.py; this module only scores) with binary
cross-entropy on the training split only, each training message masked out of its own
keys. s_i is the key similarity of the index search (the config's `similarity`), with the
character n-gram term when its ngram_weight is above 0 (fraud/text/ngrams.py).
The attention weights a_i are what the evidence shows. Stored in the index directory as
head.safetensors + head.json (+ lexical.safetensors; no pickle), covered by the index
manifest's digests (fraud/index/files.py). head.json records the index version the head was
trained on, and its own alert threshold: a head is only used with that version of the
index (fraud/scoring/detector.py), and its threshold only with the head.

torch is imported only to train a head, or to score with one whose keys interact with the
query (`pair` "bilinear" or "mlp"): a head loaded from its files (the default, `pair`
"none") scores in numpy, so a worker whose encoder runs on ONNX Runtime never imports
torch (`import torch` alone took 553 MiB of resident memory here, issue 21).
"""

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fraud.errors import DataError
from fraud.index.files import (
    HEAD_CONFIG,
    HEAD_FILES,
    HEAD_WEIGHTS,
    MANIFEST_FILE,
    read_manifest,
    verify_files,
)
from fraud.index.keys import Keys, KeySimilarity
from fraud.index.reference_index import ReferenceIndex
from fraud.text.lexical import LexicalModel


@dataclass(frozen=True)
class HeadConfig:
    dim: int
    n_categories: int  # fraud categories known at training time (values per category)
    pair: str = "none"  # how q and k_i interact beyond s_i: "none", "bilinear" or "mlp"
    hidden: int = 16  # rank of the bilinear term, or the MLP's width
    heads: int = 4  # attention heads, each with its own T, tau, null key and values
    lexical: bool = True  # add the lexical model's logit (fraud/text/lexical.py) as a query term
    # Learn the linear terms on the query embedding (w . q in the score, n_h . q in the null
    # key). Off (the default): they stay at zero, and the head reads the message only
    # through its keys and the lexical term, under a hundred parameters instead of some
    # four thousand. On grouped inner folds of UCI + the seed set they cost PR-AUC
    # (docs/quality.md, the variant "+ query terms"): a linear model on the embedding
    # learns the training set's style. A head saved before this field had them on; its
    # weights load as they were saved.
    query_terms: bool = False
    top_k: int = 32
    # The key similarity the head was trained on: the character n-gram term's weight and
    # lengths (fraud/text/ngrams.py); 0, the dense cosine alone, for a head saved before it.
    ngram_weight: float = 0.0
    ngram_range: tuple[int, int] = (1, 3)
    epochs: int = 80
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ngram_range", tuple(self.ngram_range))  # a list from JSON

    @property
    def similarity(self) -> KeySimilarity:
        """The key similarity the head was trained on, and scores with."""
        return KeySimilarity.of(self)


def attention_module(config: HeadConfig):
    """A new torch module of the head (AttentionHead), for training or for a `pair` head."""
    return _attention_head_class()(config)


@functools.cache
def _attention_head_class():
    """The torch module's class, defined on first use so that importing this module does
    not import torch (the module docstring)."""
    import torch
    from torch import nn

    class AttentionHead(nn.Module):
        """The head's forward pass in torch; TrainedHead._numpy_forward is the same."""

        def __init__(self, config: HeadConfig) -> None:
            super().__init__()
            self.config = config
            d, h = config.dim, config.hidden
            H = config.heads
            # Heads start at different temperatures: sharp ones read the nearest keys, broad
            # ones the neighbourhood.
            temps = np.geomspace(0.03, 0.15, H) if H > 1 else np.array([0.05])
            self.log_temperature = nn.Parameter(torch.tensor(np.log(temps), dtype=torch.float32))
            self.tau = nn.Parameter(torch.full((H,), 0.5))
            if config.pair == "mlp":
                self.pair = nn.Sequential(nn.Linear(4 * d, h), nn.GELU(), nn.Linear(h, 1))
            elif config.pair == "bilinear":
                self.pair = nn.Linear(d, h, bias=False)
                nn.init.normal_(self.pair.weight, std=0.01)
            self.null_query = nn.Linear(d, H, bias=False)
            # Values per head: index 0 = legit, 1..C = fraud categories, C+1 = the null key.
            self.values = nn.Parameter(torch.zeros(H, config.n_categories + 2))
            with torch.no_grad():
                self.values[:, 1 : config.n_categories + 1] = 1.0
            self.alpha = nn.Parameter(torch.full((H,), 4.0 / H))
            self.query = nn.Linear(d, 1)
            nn.init.zeros_(self.query.weight)
            self.lexical_weight = nn.Parameter(torch.tensor(1.0 if config.lexical else 0.0))
            nn.init.zeros_(self.null_query.weight)
            if not config.query_terms:  # zero and frozen: see HeadConfig.query_terms
                for layer in (self.query, self.null_query):
                    layer.weight.requires_grad_(False)

        def forward(
            self,
            q: torch.Tensor,  # (n, d)
            keys: torch.Tensor,  # (n, m, d)
            sims: torch.Tensor,  # (n, m)
            value_ids: torch.Tensor,  # (n, m) long: 0 legit, 1..C fraud category
            valid: torch.Tensor,  # (n, m) bool
            lexical: torch.Tensor,  # (n,) the lexical model's logit, zeros without one
            log_weights: torch.Tensor,  # (n, m) log of each key's weight (0: weight 1)
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """(logit (n,), attention over [null, keys] averaged over heads (n, m + 1))."""
            t = self.log_temperature.exp()  # (H,)
            key_logits = sims.unsqueeze(-1) / t + log_weights.unsqueeze(-1)  # (n, m, H)
            if self.config.pair == "mlp":
                qe = q.unsqueeze(1).expand_as(keys)
                pair = torch.cat([qe, keys, qe - keys, qe * keys], dim=-1)
                key_logits = key_logits + self.pair(pair)
            elif self.config.pair == "bilinear":
                pair = (self.pair(q).unsqueeze(1) * self.pair(keys)).sum(-1, keepdim=True)
                key_logits = key_logits + pair
            key_logits = key_logits.masked_fill(~valid.unsqueeze(-1), float("-inf"))
            null_logit = (self.tau / t + self.null_query(q)).unsqueeze(1)  # (n, 1, H)
            attention = torch.softmax(torch.cat([null_logit, key_logits], dim=1), dim=1)
            heads = torch.arange(self.config.heads)
            key_values = self.values[heads, value_ids.unsqueeze(-1)]  # (n, m, H)
            null_values = self.values[:, -1].expand(len(q), 1, -1)
            readout = (attention * torch.cat([null_values, key_values], dim=1)).sum(dim=1)
            logit = (readout * self.alpha).sum(-1) + self.query(q).squeeze(-1)
            logit = logit + self.lexical_weight * lexical
            return logit, attention.mean(dim=-1)

    return AttentionHead


def as_tensors(inputs: tuple) -> tuple:
    """TrainedHead.inputs as the torch tensors the module takes."""
    import torch

    q, key_vectors, sims, value_ids, valid, lexical, log_weights = inputs
    return (
        torch.as_tensor(q, dtype=torch.float32),
        torch.as_tensor(key_vectors, dtype=torch.float32),
        torch.as_tensor(sims, dtype=torch.float32),
        torch.as_tensor(value_ids, dtype=torch.long),
        torch.as_tensor(valid, dtype=torch.bool),
        torch.as_tensor(lexical, dtype=torch.float32),
        torch.as_tensor(log_weights, dtype=torch.float32),
    )


class TrainedHead:
    """A head with the fraud categories it learned values for, scoring against a
    ReferenceIndex; `threshold` is the alert threshold chosen for it (`fraud train`).

    Either a torch `module` (being trained, or just trained: it scores in torch) or the
    `weights` of one as numpy arrays (loaded from its files: it scores in numpy)."""

    def __init__(
        self,
        module,
        categories: list[str],
        index_version: str,
        lexical: LexicalModel | None = None,
        threshold: float | None = None,
        *,
        config: HeadConfig | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.module, self.weights = module, weights
        self.categories, self.index_version = categories, index_version
        self.config = module.config if module is not None else config
        self.lexical, self.threshold = lexical, threshold

    def inputs(
        self,
        index: ReferenceIndex,
        queries: np.ndarray,
        keys: Keys,
        texts: Sequence[str],
        lexical_logits: np.ndarray | None = None,
    ) -> tuple:
        """(q, key vectors, similarities, value ids, valid, lexical logit, log weights)."""
        n = len(queries)
        keys = index.attach_vectors(keys)
        # Value ids: 0 for legit, 1 + the category's position for fraud; a category the
        # head never saw shares the value of its first one.
        position = {c: i + 1 for i, c in enumerate(self.categories)}
        codes = np.array([position.get(c, 1) for c in index.categories] or [1], dtype=np.int64)
        values = np.where(keys.valid & keys.is_fraud, codes[keys.category_codes], 0)
        if lexical_logits is None:
            lexical_logits = self.lexical.logit(texts) if self.lexical else np.zeros(n)
        return (
            queries,
            keys.vectors,
            keys.similarities,
            values,
            keys.valid,
            lexical_logits,
            keys.log_weights,
        )

    def score(
        self, index: ReferenceIndex, queries: np.ndarray, keys: Keys, texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(fraud probability (n,), attention weight of each key (n, m))."""
        inputs = self.inputs(index, queries, keys, texts)
        if self.module is None and self.config.pair == "none":
            logit, attention = self._numpy_forward(*inputs)
        else:
            logit, attention = self._torch_forward(inputs)
        probability = 1 / (1 + np.exp(-logit.astype(np.float64)))
        return probability, attention[:, 1:].astype(np.float64)

    def _torch_forward(self, inputs: tuple) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self.module is None:  # a loaded head whose keys interact with the query
            self.module = attention_module(self.config)
            state = {k: torch.from_numpy(v) for k, v in self.weights.items()}
            self.module.load_state_dict(state)
            self.module.eval()
        with torch.inference_mode():
            logit, attention = self.module(*as_tensors(inputs))
        return logit.numpy(), attention.numpy()

    def _numpy_forward(self, q, keys, sims, value_ids, valid, lexical, log_weights):
        """The module's forward pass (AttentionHead.forward, `pair` "none") in numpy float32:
        (logit (n,), attention over [null, keys] averaged over heads (n, m + 1))."""
        w = self.weights
        t = np.exp(w["log_temperature"])  # (H,)
        sims = np.asarray(sims, np.float32)
        key_logits = sims[..., None] / t + np.asarray(log_weights, np.float32)[..., None]
        key_logits = np.where(np.asarray(valid)[..., None], key_logits, -np.inf)
        q = np.asarray(q, np.float32)
        null_logit = (w["tau"] / t + q @ w["null_query.weight"].T)[:, None, :]  # (n, 1, H)
        logits = np.concatenate([null_logit, key_logits], axis=1).astype(np.float32)
        attention = np.exp(logits - logits.max(axis=1, keepdims=True))
        attention /= attention.sum(axis=1, keepdims=True)
        values = w["values"]  # (H, categories + 2)
        key_values = values.T[np.asarray(value_ids)]  # (n, m, H)
        null_values = np.broadcast_to(values[:, -1], (len(q), 1, values.shape[0]))
        readout = (attention * np.concatenate([null_values, key_values], axis=1)).sum(axis=1)
        logit = (readout * w["alpha"]).sum(-1) + (q @ w["query.weight"].T)[:, 0] + w["query.bias"]
        logit = logit + w["lexical_weight"] * np.asarray(lexical, np.float32)
        return logit, attention.mean(axis=-1)

    def _weights(self) -> dict[str, np.ndarray]:
        """The head's parameters as numpy arrays (the module's, while it has one)."""
        if self.module is None:
            return self.weights
        return {k: v.detach().numpy().copy() for k, v in self.module.state_dict().items()}

    def fitted(self) -> dict:
        w = self._weights()
        return {
            "temperature": [round(float(t), 4) for t in np.exp(w["log_temperature"])],
            "null_similarity": [round(float(t), 4) for t in w["tau"]],
            **self.config.similarity.as_fields(),
        }

    def write_files(self, directory: Path) -> None:
        """Write the head's files into `directory`, which fraud/index/files.py is assembling
        (its manifest then records their digests): write_index_dir(dir, index, head)."""
        from safetensors.numpy import save_file  # lazily: only a head's files need it

        directory = Path(directory)
        state = {k: np.ascontiguousarray(v) for k, v in self._weights().items()}
        save_file(state, directory / HEAD_WEIGHTS)
        if self.lexical is not None:
            self.lexical.save(directory)
        meta = {
            "config": asdict(self.config),
            "categories": self.categories,
            "index_version": self.index_version,
            "threshold": self.threshold,
        }
        (directory / HEAD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def load_head(directory: Path) -> TrainedHead | None:
    """The head stored in an index directory, or None when there is none. Its files must
    be the ones the index manifest records (DataError, one line, otherwise)."""
    from safetensors.numpy import load_file  # lazily, as in write_files

    directory = Path(directory)
    present = [name for name in HEAD_FILES if (directory / name).exists()]
    if not present and not (directory / MANIFEST_FILE).is_file():
        return None
    manifest = read_manifest(directory)
    listed = [name for name in HEAD_FILES if name in (manifest.get("files") or {})]
    if not present and not listed:
        return None
    if unlisted := sorted(set(present) - set(listed)):
        raise DataError(
            f"{directory}: {', '.join(unlisted)} not covered by the index manifest (copied "
            f"in, or written by an older version): train the head again with `fraud train "
            f"--index {directory}`, or remove them"
        )
    verify_files(directory, manifest, listed)  # a missing or changed file: refused
    meta = json.loads((directory / HEAD_CONFIG).read_text())
    config = HeadConfig(**meta["config"])
    lexical = LexicalModel.load(directory) if config.lexical else None
    return TrainedHead(
        None,
        meta["categories"],
        meta["index_version"],
        lexical,
        meta.get("threshold"),
        config=config,
        weights=load_file(directory / HEAD_WEIGHTS),
    )
