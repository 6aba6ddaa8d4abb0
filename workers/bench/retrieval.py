"""Retrieval at bank sizes the public data does not reach: exact (flat) against approximate
(ivf) search, on synthetic references made from real sentence embeddings.

The data (`synthetic_bank`): the UCI SMS texts (`../shared/data/sms_spam_uci.csv`,
5,160 after normalization and de-duplication) embedded with the project's encoder (through
the SQLite embedding cache). A seeded permutation holds `n_queries` of them out as queries;
the rest are the bases. Each synthetic reference is

    v = normalize(x_i + lam (x_j - x_i) + sigma (x_a - x_b + x_c - x_d) / 2)

with x_i a random base, x_j one of the 10 bases nearest to x_i, lam ~ U(0, 0.5), and
x_a..x_d four random bases (the noise follows the spread of real embeddings rather than
an isotropic Gaussian); sigma = 0.25. So references lie along segments between real
neighbouring messages, clustered as real embeddings are, and the queries are real messages
never used to make them.

`retrieval_bench` builds each size with both index types (the same FAISS structures as
`ReferenceIndex` builds: `flat_faiss`, `ivf_faiss`) and measures build time, memory
(estimate: `faiss_memory_bytes`), single-query and batch-of-64 search time (median, FAISS
search only: the label lookups of `ReferenceIndex.search` add a few microseconds), and
recall@k of the top k against exact search. `decision_agreement` measures how many of the
parameter-free scorer's decisions on the public data change between the two.
"""

import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from fraud.config import ScorerSettings
from fraud.datasets import LabeledText, read_labeled_csv
from fraud.encoding.cache import CachedEncoder
from fraud.encoding.encoder import BUNDLED_MODEL_NAME, Encoder
from fraud.index import IndexSpec, ReferenceIndex, faiss_memory_bytes, flat_faiss, ivf_faiss
from fraud.scoring import Detector
from fraud.text.normalize import normalize
from workers.bench.timing import RepeatTimer

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "sms_spam_uci.csv"
DEFAULT_CACHE = Path(".cache/embeddings")
SIGMA, NEIGHBOURS, MAX_LAM = 0.25, 10, 0.5


def uci_embeddings(
    csv_path: Path = DEFAULT_CSV, cache_dir: Path = DEFAULT_CACHE
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, is_fraud) of the UCI texts, de-duplicated after normalization; the
    encoder is loaded only if the cache lacks a text."""

    class LazyEncoder:
        name, dim = BUNDLED_MODEL_NAME, 384

        def encode(self, texts, progress=None):
            return Encoder().encode(texts, progress=progress)  # loaded on a cache miss only

    items = read_labeled_csv(csv_path, "spam", "ham")
    seen, unique = set(), []
    for item in items:
        key = normalize(item.text)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    cached = CachedEncoder(LazyEncoder(), cache_dir)
    try:
        vectors = cached.encode([item.text for item in unique])
    finally:
        cached.close()
    return vectors, np.array([item.label == "fraud" for item in unique])


def synthetic_bank(
    real: np.ndarray, n: int, n_queries: int = 500, seed: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """(references (n, dim), queries (n_queries, dim)) as the module docstring says."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    queries, bases = real[order[:n_queries]], real[order[n_queries:]]
    sims = bases @ bases.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argpartition(-sims, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
    del sims
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        i = rng.integers(0, len(bases), m)
        j = near[i, rng.integers(0, NEIGHBOURS, m)]
        lam = rng.uniform(0, MAX_LAM, (m, 1)).astype(np.float32)
        a, b, c, d = (bases[rng.integers(0, len(bases), m)] for _ in range(4))
        v = bases[i] + lam * (bases[j] - bases[i]) + SIGMA * (a - b + c - d) / 2
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, np.ascontiguousarray(queries)


def _median_ms(index: faiss.Index, queries: np.ndarray, k: int, batch: int, rounds: int) -> float:
    """Median milliseconds per message of searching `queries` `batch` at a time, each round
    another slice of them."""
    size = min(batch, len(queries))
    starts = [(r * batch) % max(len(queries) - batch + 1, 1) for r in range(rounds)]
    chunks = [queries[start : start + batch] for start in starts]
    timer = RepeatTimer(runs=rounds)
    for r in timer:
        index.search(chunks[r], k)
    return timer.median_s() / size * 1e3


def retrieval_bench(
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    *,
    nprobes: Sequence[int] = (16, 64),
    k: int = 32,
    n_queries: int = 500,
    csv_path: Path = DEFAULT_CSV,
    cache_dir: Path = DEFAULT_CACHE,
    seed: int = 13,
    progress: bool = False,
) -> list[dict]:
    """One row per size and index (flat, then ivf once per nprobe in `nprobes`, the lists
    built once): {size, index_type, params, build_s, memory_bytes, single_query_ms,
    batch64_per_message_ms, recall_at_32}. JSON-able."""
    real, _ = uci_embeddings(csv_path, cache_dir)
    rows = []
    for size in sizes:
        refs, queries = synthetic_bank(real, size, n_queries, seed)
        ids = np.arange(size, dtype=np.int64)
        truth = None
        runs = [("flat", None)] + [("ivf", nprobe) for nprobe in nprobes]
        index = None
        for kind, nprobe in runs:
            t = time.perf_counter()
            if kind == "flat":
                index = flat_faiss(refs.shape[1])
                index.add_with_ids(refs, ids)
                params: dict = {}
                build_s = time.perf_counter() - t
            elif not isinstance(index, faiss.IndexIVF):
                spec = IndexSpec(type="ivf", min_size=0)
                index = ivf_faiss(spec, ids, refs, progress=progress, seed=seed)
                build_s = time.perf_counter() - t
            if kind == "ivf":
                index.nprobe = min(nprobe, index.nlist)
                params = {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
            _, found = index.search(queries, k)
            if truth is None:
                truth = found
            recall = np.mean(
                [len(np.intersect1d(a, b)) / k for a, b in zip(found, truth, strict=True)]
            )
            # Exact search at 1 M takes ~0.15 s a query: fewer single-query rounds there.
            singles = 100 if kind == "ivf" or size <= 100_000 else 20
            rows.append(
                {
                    "size": size,
                    "index_type": kind,
                    "params": params,
                    "build_s": round(build_s, 2),
                    "memory_bytes": faiss_memory_bytes(index),
                    "single_query_ms": round(_median_ms(index, queries, k, 1, singles), 4),
                    "batch64_per_message_ms": round(_median_ms(index, queries, k, 64, 8), 4),
                    "recall_at_32": round(float(recall), 4),
                }
            )
            if progress:
                print(rows[-1], flush=True)
        del index, refs
    return rows


def decision_agreement(
    nlist: int | None = None,
    nprobe: int = 16,
    folds: int = 5,
    csv_path: Path = DEFAULT_CSV,
    cache_dir: Path = DEFAULT_CACHE,
    seed: int = 13,
) -> dict:
    """The parameter-free attention scorer (ScorerSettings defaults) over a flat and an ivf
    index of the same references: in each of `folds` folds of the UCI data the rest is the
    index and the fold the messages; how many is_alert decisions differ. nlist None: the
    default rule (16 lists at this size, so nprobe 16 searches them all: exact)."""
    vectors, is_fraud = uci_embeddings(csv_path, cache_dir)
    fold_of = np.random.default_rng(seed).permutation(len(vectors)) % folds
    params = ScorerSettings()
    changed = alerts_flat = alerts_ivf = 0
    nlists = []
    for f in range(folds):
        train, test = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        items = [
            LabeledText(
                f"#{i}", "fraud" if is_fraud[i] else "legit", "spam" if is_fraud[i] else None
            )
            for i in train
        ]
        decisions = []
        ivf = IndexSpec(type="ivf", nlist=nlist, nprobe=nprobe, min_size=0)
        for spec in (IndexSpec(), ivf):
            index = ReferenceIndex("bench", vectors.shape[1], None, spec)
            index.add(items, vectors[train], "uci")
            if spec.type == "ivf":
                nlists.append(index.index_params()["nlist"])
            assessments = Detector(None, index, params).score(vectors[test]).assessments
            decisions.append(np.array([a.is_alert for a in assessments]))
        changed += int((decisions[0] != decisions[1]).sum())
        alerts_flat += int(decisions[0].sum())
        alerts_ivf += int(decisions[1].sum())
    return {
        "messages": len(vectors),
        "changed": changed,
        "changed_pct": round(100 * changed / len(vectors), 3),
        "alerts_flat": alerts_flat,
        "alerts_ivf": alerts_ivf,
        "nlist": nlists,
        "nprobe": nprobe,
    }


if __name__ == "__main__":
    import json
    import sys

    sizes = tuple(int(s) for s in sys.argv[1:]) or (10_000, 100_000, 1_000_000)
    for nlist, nprobe in ((None, 16), (256, 16), (256, 4)):
        print(json.dumps(decision_agreement(nlist, nprobe)), flush=True)
    print(json.dumps(retrieval_bench(sizes, progress=True), indent=1))
