"""The one scoring path: encoder -> FAISS top-k -> attention -> assessments -> decisions.

The worker, `fraud serve`, the feedback processor and `fraud score` all score through it,
in three steps:

    queries = detector.encode(texts)                  # (n, dim) float32, checked here
    result = detector.score(queries, texts)           # ScoreResult(assessments, timings)
    decision = detector.decide(message, assessment, scored_at=..., processing_ms=...)

With the recipients' history as extra keys, fraud/scoring/history.py's HistoryScorer takes
the place of `detector.score`.
"""

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np

from fraud.config import ScorerSettings, Settings
from fraud.encoding.base import TextEncoder, check_embeddings
from fraud.encoding.encoder import Encoder
from fraud.index.keys import Keys, KeySimilarity
from fraud.index.reference_index import ReferenceIndex
from fraud.schemas import Assessment, Decision, Evidence, Message
from fraud.scoring.attention import attend, category_mass, top_evidence
from fraud.scoring.head import TrainedHead, load_head

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


def choose_head(directory: Path, index: ReferenceIndex) -> tuple[TrainedHead | None, ScorerChoice]:
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


@dataclass(frozen=True)
class ScoreResult:
    """What Detector.score returns: one assessment per message, in input order, and the
    seconds the scoring spent in each of its stages ("search", "attention"), for the
    caller's stage metrics (fraud_stage_duration_seconds)."""

    assessments: list[Assessment]
    timings: Mapping[str, float] = field(default_factory=dict)


class Detector:
    """Scores messages: the trained attention head when the index has one trained on it
    (fraud train), else the parameter-free attention scorer (`choice` says which, why).

    What the scorer retrieves and how it measures a key's similarity are resolved once,
    here: `top_k` and `similarity` (KeySimilarity) are a trained head's own (it learned
    with them), else the scorer parameters' (`params`: settings over the manifest,
    effective_scorer). `params.threshold` is the alert threshold.
    """

    def __init__(
        self,
        encoder: TextEncoder | None,
        index: ReferenceIndex,
        params: ScorerSettings,
        head: TrainedHead | None = None,
        choice: ScorerChoice | None = None,
    ) -> None:
        self.encoder, self.index, self.params, self.head = encoder, index, params, head
        self.choice = choice or (
            ScorerChoice("trained_head", "trained head")
            if head
            else ScorerChoice("no_head", "no trained head")
        )
        self.top_k: int = head.config.top_k if head else params.top_k
        self.similarity = head.config.similarity if head else KeySimilarity.of(params)
        if self.similarity.reads_text:
            index.prepare_ngrams(self.similarity.ngram_range)

    @classmethod
    def from_settings(cls, settings: Settings, index_dir: Path | None = None) -> "Detector":
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

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The messages' embeddings, (n, dim) float32 unit rows: the encoder's output,
        checked at the edge (TypeError naming the encoder when it is not that)."""
        if not texts:
            return np.zeros((0, self.index.dim), np.float32)
        vectors = self.encoder.encode(list(texts))
        return check_embeddings(vectors, len(texts), self.index.dim, self.encoder.name)

    def score(
        self,
        queries: np.ndarray,
        texts: Sequence[str] | None = None,
        *,
        extra_keys: Keys | None = None,
    ) -> ScoreResult:
        """The assessment of each embedded message (`queries`, from `encode`). The texts
        are needed too by a head with a lexical term and by a key similarity with an
        n-gram term.

        extra_keys: keys beside the retrieved ones, per message (the recipient's history,
        fraud/scoring/history.py), attended to in the same softmax.
        """
        started = time.perf_counter()
        keys = self._keys(queries, texts, extra_keys)
        searched = time.perf_counter()
        scores, weights = self._attend(queries, keys, texts)
        assessments = self._assessments(keys, scores, weights)
        timings = {"search": searched - started, "attention": time.perf_counter() - searched}
        return ScoreResult(assessments, timings)

    def decide(self, message: Message, assessment: Assessment, **fields) -> Decision:
        """The published decision on `message`: its assessment with this detector's
        threshold, model and index version (`fields`: scored_at, processing_ms,
        retroactive, campaign_id)."""
        return Decision.build(
            message,
            assessment,
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
            "top_k": str(self.top_k),
            "temperature": f"{p.temperature:g}",
            "null_similarity": f"{p.null_similarity:g}",
            "threshold": f"{p.threshold:g}",
            "ngram_weight": f"{self.similarity.weight:g}",
        }

    # -- the steps of score ------------------------------------------------------------

    def _keys(
        self, queries: np.ndarray, texts: Sequence[str] | None, extra_keys: Keys | None
    ) -> Keys:
        """The retrieved keys, then the extra ones (with every key's vector attached)."""
        if self.similarity.reads_text and texts is None:
            raise ValueError("this scorer's key similarity reads the message text: pass texts")
        keys = self.index.search(
            queries,
            self.top_k,
            texts=texts if self.similarity.reads_text else None,
            similarity=self.similarity,
        )
        if extra_keys is not None and extra_keys.shape[1]:
            keys = Keys.concat(self.index.attach_vectors(keys), self._dense_part(extra_keys))
        return keys

    def _dense_part(self, extra_keys: Keys) -> Keys:
        """Extra keys (history entries) keep no text, so their similarity has no n-gram
        term: they get the dense part of the key similarity, (1 - weight) * cosine, as if
        they shared no n-gram with the message. Their raw cosine beside a bank key's mixed
        similarity would outrank it whenever the n-gram term is below the cosine, as it
        nearly always is: with the adapted encoder (frauds close together) and the default
        head (n-gram weight 0.7), a recipient's earlier frauds then drew a legit message's
        attention and 8 of 231 legit dev messages alerted, against 3 without history."""
        if not self.similarity.reads_text:
            return extra_keys
        dense = extra_keys.similarities * np.float32(1.0 - self.similarity.weight)
        return replace(extra_keys, similarities=dense)

    def _attend(
        self, queries: np.ndarray, keys: Keys, texts: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(fraud score (n,), attention weight of each key (n, m)): the head's or the
        parameter-free attention's."""
        if self.head is not None:
            if texts is None and self.head.lexical is not None:
                raise ValueError("this index's head reads the message text: pass texts")
            return self.head.score(self.index, queries, keys, texts or [])
        p = self.params
        att = attend(
            keys.similarities,
            keys.valid,
            keys.is_fraud,
            temperature=p.temperature,
            null_similarity=p.null_similarity,
            log_weights=keys.log_weights,
        )
        return att.fraud_score, att.weights

    def _assessments(self, keys: Keys, scores: np.ndarray, weights: np.ndarray) -> list[Assessment]:
        p, categories = self.params, self.index.categories
        fraud_keys = keys.valid & keys.is_fraud
        mass = category_mass(weights, fraud_keys, keys.category_codes, len(categories))
        # The distribution splits the score by the attention each category received (for the
        # parameter-free scorer the mass already sums to the score).
        mass *= (scores / np.maximum(mass.sum(axis=1), 1e-12))[:, None]
        evidence_cols = top_evidence(weights, fraud_keys, p.max_evidence)
        assessments = []
        for i, cols in enumerate(evidence_cols):
            score = float(np.clip(scores[i], 0.0, 1.0))
            distribution = {
                name: round(float(mass[i, c]), 6)
                for c, name in enumerate(categories)
                if mass[i, c] > 1e-6
            }
            assessments.append(
                Assessment(
                    score=score,
                    is_alert=score >= p.threshold,
                    category=max(distribution, key=distribution.get) if distribution else None,
                    category_distribution=distribution,
                    evidence=[self._evidence(keys, weights, i, j) for j in cols],
                )
            )
        return assessments

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
