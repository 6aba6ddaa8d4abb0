"""The benchmarks and the soak, outside the library (faiss keeps its own in benchs/): the
encoder and attention (encoder.py), retrieval (retrieval.py), end to end through the
broker (end_to_end.py), `fraud serve` under load (serve.py), a long steady stream
(soak.py); each times what it measures with the one timer (timing.py)."""

from workers.bench.encoder import (
    attention_bench,
    encoder_bench,
    variant_quality,
    variants_bench,
)
from workers.bench.end_to_end import end_to_end_bench
from workers.bench.retrieval import decision_agreement, retrieval_bench
from workers.bench.serve import serve_bench
from workers.bench.soak import FLAT_PCT, soak
from workers.bench.timing import RepeatTimer, percentiles_ms

__all__ = [
    "FLAT_PCT",
    "RepeatTimer",
    "attention_bench",
    "decision_agreement",
    "encoder_bench",
    "end_to_end_bench",
    "percentiles_ms",
    "retrieval_bench",
    "serve_bench",
    "soak",
    "variant_quality",
    "variants_bench",
]
