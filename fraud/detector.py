"""The one scoring path: encoder -> FAISS top-k -> attention -> verdicts.

The worker, the CLI and (later) the HTTP service all score through `Detector.score`.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fraud.config import ScorerSettings, Settings
from fraud.index import ReferenceIndex
from fraud.schemas import Evidence, Verdict
from fraud.scorer import attend, top_evidence


def effective_scorer(settings: ScorerSettings, index: ReferenceIndex) -> ScorerSettings:
    """Scorer parameters: those stored in the index manifest, overridden by any that the
    user set explicitly (flag or FRAUD_SCORER__* variable)."""
    explicit = settings.model_dump(include=settings.model_fields_set)
    stored = {k: v for k, v in index.scorer_params.items() if k in ScorerSettings.model_fields}
    return ScorerSettings(**{**settings.model_dump(), **stored, **explicit})


class Detector:
    def __init__(self, encoder, index: ReferenceIndex, params: ScorerSettings) -> None:
        self.encoder, self.index, self.params = encoder, index, params

    @classmethod
    def from_settings(cls, settings: Settings, index_dir: Path | None = None) -> "Detector":
        from fraud.encoder import Encoder

        encoder = Encoder(
            settings.model_path,
            max_tokens=settings.max_tokens,
            torch_threads=settings.torch_threads,
            batch_size=settings.encode_batch_size,
        )
        index = ReferenceIndex.load(
            index_dir or settings.index_dir, model=encoder.name, dim=encoder.dim
        )
        return cls(encoder, index, effective_scorer(settings.scorer, index))

    @property
    def model(self) -> str:
        return self.encoder.name

    def score(self, texts: Sequence[str]) -> list[Verdict]:
        if not texts:
            return []
        return self.score_embeddings(self.encoder.encode(texts))

    def score_embeddings(self, queries: np.ndarray) -> list[Verdict]:
        p = self.params
        keys = self.index.search(queries, p.top_k)
        att = attend(
            keys.similarities,
            keys.valid,
            keys.is_fraud,
            keys.category_codes,
            len(self.index.categories),
            temperature=p.temperature,
            null_similarity=p.null_similarity,
        )
        evidence_cols = top_evidence(att.weights, keys.valid & keys.is_fraud, p.max_evidence)
        verdicts = []
        for i, cols in enumerate(evidence_cols):
            score = float(np.clip(att.fraud_score[i], 0.0, 1.0))
            mass = att.category_mass[i]
            distribution = {
                name: round(float(mass[c]), 6)
                for c, name in enumerate(self.index.categories)
                if mass[c] > 1e-6
            }
            evidence = [
                Evidence(
                    reference_id=int(keys.ids[i, j]),
                    category=self.index.categories[int(keys.category_codes[i, j])],
                    similarity=round(float(keys.similarities[i, j]), 6),
                    weight=round(float(att.weights[i, j]), 6),
                )
                for j in cols
            ]
            verdicts.append(
                Verdict(
                    score=score,
                    is_alert=score >= p.threshold,
                    category=max(distribution, key=distribution.get) if distribution else None,
                    category_distribution=distribution,
                    evidence=evidence,
                )
            )
        return verdicts
