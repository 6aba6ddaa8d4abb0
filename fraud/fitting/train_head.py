"""Training the learned attention head (fraud/scoring/head.py, which only scores).

It is trained with binary cross-entropy on the training messages only, each one masked
out of its own keys. `train_over_index` trains on an index's own references (`fraud
train`); `HeadOnSplit` does the same on a split of labeled data, scoring another split
(the inner folds that choose the head's threshold, and `fraud evaluate`).
"""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from fraud.fitting.calibration import fit_key_similarity
from fraud.fitting.folds import (
    Split,
    grouped_folds,
    inner_scores,
    near_duplicate_groups,
    split_index,
)
from fraud.index.keys import Keys, KeySimilarity
from fraud.index.reference_index import ReferenceIndex
from fraud.scoring.head import HeadConfig, TrainedHead, as_tensors, attention_module
from fraud.text.lexical import LexicalModel

LEXICAL_FOLDS = 3


def train_head(
    config: HeadConfig,
    index: ReferenceIndex,
    queries: np.ndarray,
    keys: Keys,
    texts: Sequence[str],
    y: np.ndarray,
    groups: np.ndarray | None = None,
) -> TrainedHead:
    """Fit on training messages whose keys already exclude each message itself.

    The lexical term is trained on the same messages; the head learns from its
    out-of-fold logits (3 folds that keep near-duplicate `groups` whole; computed from
    the texts when not given), so it does not learn to trust a model that saw the answer. The
    head learns a value per category of the index's codebook: config.n_categories is set
    to their number (fewer would give some categories the null key's value).
    """
    config = replace(config, n_categories=len(index.categories))
    torch.manual_seed(config.seed)
    texts, y = list(texts), np.asarray(y, dtype=bool)
    lexical, lexical_logits = None, np.zeros(len(y))
    if config.lexical:
        lexical = LexicalModel.fit(texts, y)
        groups = near_duplicate_groups(texts) if groups is None else groups
        folds = grouped_folds(y, groups, LEXICAL_FOLDS, config.seed)
        lexical_logits = LexicalModel.out_of_fold_logits(texts, y, folds)
    module = attention_module(config)
    head = TrainedHead(module, list(index.categories), index.version, lexical)
    data = as_tensors(head.inputs(index, queries, keys, texts, lexical_logits))
    target = torch.as_tensor(np.asarray(y, dtype=np.float32))
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    module.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(target), generator=generator).split(config.batch_size):
            optimizer.zero_grad()
            logit, _ = module(*(t[batch] for t in data))
            loss_fn(logit, target[batch]).backward()
            optimizer.step()
    module.eval()
    return head


def train_over_index(
    config: HeadConfig,
    index: ReferenceIndex,
    queries: np.ndarray,
    self_ids: np.ndarray,
    texts: Sequence[str],
    y: np.ndarray,
    fit_ngram: bool = False,
    groups: np.ndarray | None = None,
) -> TrainedHead:
    """Train a head on messages that are also references of `index` (self_ids: each one's
    reference id, or -1), each masked out of its own keys.

    fit_ngram: first fit the key similarity's n-gram term by the parameter-free
    attention's log-loss on these messages (fraud.fitting.calibration.fit_key_similarity;
    weight 0 is a candidate), and train over keys with it; otherwise the config's term.
    """
    if fit_ngram:
        dense = index.search(queries, config.top_k, exclude_ids=self_ids)
        fitted = KeySimilarity.of(fit_key_similarity(index, dense, texts, y))
        config = replace(config, ngram_weight=fitted.weight, ngram_range=fitted.ngram_range)
    keys = index.search(
        queries, config.top_k, exclude_ids=self_ids, texts=texts, similarity=config.similarity
    )
    return train_head(config, index, queries, keys, texts, y, groups)


class HeadOnSplit:
    """The learned head trained on a split, over an index of that split (split_index), and
    scoring another split against that index.

    fit_ngram: fit the key similarity's n-gram term on the training split first
    (train_over_index); otherwise the config's (default weight 0: the dense cosine).
    `config`: HeadConfig fields other than dim and n_categories, which come from the split.
    """

    def __init__(self, fit_ngram: bool = False, **config) -> None:
        self.fit_ngram, self.config = fit_ngram, config

    def fit(self, train: Split) -> None:
        self.index, self_ids = split_index(train)
        config = HeadConfig(
            dim=train.X.shape[1], n_categories=len(self.index.categories), **self.config
        )
        self.head = train_over_index(
            config,
            self.index,
            train.X,
            self_ids,
            train.data.texts,
            train.data.y,
            self.fit_ngram,
            train.data.groups,
        )
        self.fitted = self.head.fitted()

    def score(self, test: Split) -> np.ndarray:
        c = self.head.config
        keys = self.index.search(test.X, c.top_k, texts=test.data.texts, similarity=c.similarity)
        return self.head.score(self.index, test.X, keys, test.data.texts)[0]


def head_inner_scores(split: Split, config: HeadConfig, folds: int = 3) -> np.ndarray:
    """Cross-validated scores of the split's messages from heads of `config` (its key
    similarity as is) trained without them: what the head's threshold is chosen on."""
    overrides = {k: v for k, v in config.__dict__.items() if k not in ("dim", "n_categories")}
    return inner_scores(lambda: HeadOnSplit(**overrides), split, folds, config.seed)
