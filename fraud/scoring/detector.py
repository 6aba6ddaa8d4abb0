"""The one scoring path: encoder -> FAISS top-k -> attention -> verdicts.

The worker, the CLI and the HTTP service (workers/serve/app.py) all score through it.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fraud.config import ScorerSettings, Settings
from fraud.index.reference_index import Keys, ReferenceIndex
from fraud.schemas import Alert, Evidence, Message, Verdict
from fraud.scoring.attention import attend, category_mass, top_evidence
from fraud.scoring.head import load_head

log = logging.getLogger(__name__)


def effective_scorer(settings: ScorerSettings, index: ReferenceIndex) -> ScorerSettings:
    """Scorer parameters: those stored in the index manifest, overridden by any that the
    user set explicitly (flag or FRAUD_SCORER__* variable)."""
    explicit = settings.model_dump(include=settings.model_fields_set)
    stored = {k: v for k, v in index.scorer_params.items() if k in ScorerSettings.model_fields}
    return ScorerSettings(**{**settings.model_dump(), **stored, **explicit})


@dataclass(frozen=True)
class ScorerChoice:
    """Which scorer a detector uses and why: `reason` is one of a fixed set (a metric
    label): trained_head, no_head, stale_head; `detail` says it in a sentence (/readyz)."""

    reason: str
    detail: str

    @property
    def scorer(self) -> str:
        return "learned attention head" if self.reason == "trained_head" else "attention"


def choose_head(directory: Path, index: ReferenceIndex):
    """(the trained head to score with, or None; ScorerChoice) for the index loaded from
    `directory`.

    A head is used only with the index version it was trained on. Bank changes applied at
    run time ("abc+3") come after this choice and do not undo it; a directory whose index
    changed since the head was trained (`fraud index add`, a snapshot of a bank that moved
    on) gets the parameter-free scorer, with the manifest's own parameters and threshold,
    and an error in the log, until `fraud train` trains the head again.
    """
    head = load_head(directory)
    if head is None:
        return None, ScorerChoice("no_head", f"no trained head in {directory}")
    if head.index_version != index.version:
        choice = ScorerChoice(
            "stale_head",
            f"the trained head of {directory} was trained on index version "
            f"{head.index_version}, the index is {index.version}: it is not used; the "
            f"parameter-free attention scores until `fraud train --index {directory}` "
            "trains it again",
        )
        log.error("%s", choice.detail)
        return None, choice
    return head, ScorerChoice("trained_head", f"trained head of index version {index.version}")


class Detector:
    """Scores messages: the trained attention head when the index has one trained on it
    (fraud train), else the parameter-free attention scorer (`choice` says which, why)."""

    def __init__(
        self,
        encoder,
        index: ReferenceIndex,
        params: ScorerSettings,
        head=None,
        choice: ScorerChoice | None = None,
    ) -> None:
        self.encoder, self.index, self.params, self.head = encoder, index, params, head
        self.choice = choice or (
            ScorerChoice("trained_head", "trained head")
            if head
            else ScorerChoice("no_head", "no trained head")
        )
        if self.ngram_weight:
            index.prepare_ngrams(self.ngram_range)

    @property
    def ngram_weight(self) -> float:
        """The weight of the character n-gram term in the key similarity: a trained head's
        own (it learned with it), else the scorer parameter."""
        return self.head.config.ngram_weight if self.head else self.params.ngram_weight

    @property
    def ngram_range(self) -> tuple[int, int]:
        return tuple(self.head.config.ngram_range if self.head else self.params.ngram_range)

    @classmethod
    def from_settings(cls, settings: Settings, index_dir: Path | None = None) -> "Detector":
        import faiss

        from fraud.encoding.encoder import Encoder

        # The worker and `fraud serve` build their detector here: their FAISS searches are
        # small and must not take the encoder's cores (Settings.search_threads).
        faiss.omp_set_num_threads(settings.search_threads)
        encoder = Encoder.from_settings(settings)
        directory = index_dir or settings.index_dir
        index = ReferenceIndex.load(directory, model=encoder.name, dim=encoder.dim)
        head, choice = choose_head(directory, index)
        explicit = settings.scorer.model_fields_set & {"ngram_weight", "ngram_range"}
        if head is not None and explicit:
            log.warning(
                "the attention head of %s was trained with n-gram weight %g, range %s; it "
                "keeps them: the %s set for the scorer is ignored (train again to change it)",
                directory,
                head.config.ngram_weight,
                head.config.ngram_range,
                " and ".join(sorted(explicit)),
            )
        params = effective_scorer(settings.scorer, index)
        if head is not None and head.threshold is not None:
            # The head's own threshold, unless one was set explicitly (flag or variable).
            if "threshold" not in settings.scorer.model_fields_set:
                params = params.model_copy(update={"threshold": head.threshold})
        return cls(encoder, index, params, head, choice)

    @property
    def model(self) -> str:
        return self.encoder.name

    def score(self, texts: Sequence[str]) -> list[Verdict]:
        if not texts:
            return []
        return self.score_embeddings(self.encoder.encode(texts), texts)

    def score_embeddings(
        self,
        queries: np.ndarray,
        texts: Sequence[str] | None = None,
        extra_keys: Keys | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Verdict]:
        """Verdicts for embedded messages; the texts are needed too by a head with a lexical
        term and by a key similarity with an n-gram term.

        extra_keys: keys beside the retrieved ones, per message (the recipient's history,
        fraud/scoring/history.py), attended to in the same softmax.
        timings: if given, the seconds spent in "search" and "attention" are added to it.
        """
        p = self.params
        started = time.perf_counter()
        w = self.ngram_weight
        if w and texts is None:
            raise ValueError("this scorer's key similarity reads the message text: pass texts")
        keys = self.index.search(
            queries,
            self.head.config.top_k if self.head else p.top_k,
            texts=texts if w else None,
            ngram_weight=w,
            ngram_range=self.ngram_range,
        )
        if extra_keys is not None and extra_keys.ids.shape[1]:
            keys = keys.join(extra_keys, self.index)
        searched = time.perf_counter()
        if self.head is not None:
            if texts is None and self.head.lexical is not None:
                raise ValueError("this index's head reads the message text: pass texts")
            scores, weights = self.head.score(self.index, queries, keys, texts or [])
        else:
            att = attend(
                keys.similarities,
                keys.valid,
                keys.is_fraud,
                temperature=p.temperature,
                null_similarity=p.null_similarity,
                log_weights=keys.log_weights,
            )
            scores, weights = att.fraud_score, att.weights
        fraud_keys = keys.valid & keys.is_fraud
        mass = category_mass(weights, fraud_keys, keys.category_codes, len(self.index.categories))
        # The distribution splits the score by the attention each category received (for the
        # parameter-free scorer the mass already sums to the score).
        mass *= (scores / np.maximum(mass.sum(axis=1), 1e-12))[:, None]
        evidence_cols = top_evidence(weights, fraud_keys, p.max_evidence)
        verdicts = []
        for i, cols in enumerate(evidence_cols):
            score = float(np.clip(scores[i], 0.0, 1.0))
            distribution = {
                name: round(float(mass[i, c]), 6)
                for c, name in enumerate(self.index.categories)
                if mass[i, c] > 1e-6
            }
            evidence = [self._evidence(keys, weights, i, j) for j in cols]
            verdicts.append(
                Verdict(
                    score=score,
                    is_alert=score >= p.threshold,
                    category=max(distribution, key=distribution.get) if distribution else None,
                    category_distribution=distribution,
                    evidence=evidence,
                )
            )
        if timings is not None:
            timings["search"] = timings.get("search", 0.0) + searched - started
            timings["attention"] = timings.get("attention", 0.0) + time.perf_counter() - searched
        return verdicts

    def alert(self, message: Message, verdict: Verdict, **fields) -> Alert:
        """The published decision for `message`: the verdict with this detector's threshold,
        model and index version (`fields`: scored_at, processing_ms, retroactive, ...)."""
        return Alert.build(
            message,
            verdict,
            threshold=self.params.threshold,
            model=self.model,
            index_version=self.index.version,
            **fields,
        )

    @property
    def info(self) -> dict[str, str]:
        """What a decision depends on, as strings (the fraud_model_info metric's labels)."""
        p = self.params
        return {
            "model": self.model,
            "index_version": self.index.version,
            "scorer": "learned attention head" if self.head else "attention",
            "scorer_reason": self.choice.reason,
            "top_k": str(self.head.config.top_k if self.head else p.top_k),
            "temperature": f"{p.temperature:g}",
            "null_similarity": f"{p.null_similarity:g}",
            "threshold": f"{p.threshold:g}",
            "ngram_weight": f"{self.ngram_weight:g}",
        }

    def _evidence(self, keys: Keys, weights: np.ndarray, i: int, j: int) -> Evidence:
        history_id = None if keys.message_ids is None else keys.message_ids[i, j]
        return Evidence(
            source="bank" if history_id is None else "history",
            reference_id=int(keys.ids[i, j]) if history_id is None else None,
            message_id=history_id,
            category=self.index.categories[int(keys.category_codes[i, j])],
            similarity=round(float(keys.similarities[i, j]), 6),
            weight=round(float(weights[i, j]), 6),
        )
