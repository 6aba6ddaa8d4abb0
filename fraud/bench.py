"""`fraud bench`, the parts without Kafka: the encoder against its compute bound, and the
attention step. Retrieval is fraud/retrieval_bench.py; end to end through the broker is
workers/bench.py. Every figure is a median over repeats, measured in one run.

The compute bound. A BERT-style encoder with L layers, hidden size d and feed-forward size
f spends, per message of n tokens, 2 FLOPs per multiply-add in
    Q, K, V and output projections   4 * n * d * d   multiply-adds
    the feed-forward block           2 * n * d * f
    attention scores and mixing      2 * n * n * d
per layer (embeddings, layer norms and pooling are small). What this machine's matrix
multiply reaches on the encoder's own shapes (n*batch x d times d x f, in fp32) bounds how
many messages per second any implementation of that arithmetic can do.
"""

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from fraud.scorer import attend


def encoder_flops(n_tokens: np.ndarray, layers: int, hidden: int, intermediate: int) -> np.ndarray:
    """FLOPs of one forward pass per message of n_tokens tokens (no padding)."""
    n = np.asarray(n_tokens, dtype=np.float64)
    per_layer = 2 * (4 * n * hidden * hidden + 2 * n * hidden * intermediate + 2 * n * n * hidden)
    return layers * per_layer


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(rows: int, hidden: int, intermediate: int, repeats: int = 50) -> float:
    """fp32 GFLOP/s of torch's matrix multiply on the encoder's feed-forward shape."""
    import torch

    a = torch.randn(rows, hidden)
    b = torch.randn(hidden, intermediate)
    with torch.inference_mode():
        a @ b  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - start)
    # The best of the repeats: what the hardware can do, not what a busy moment allowed.
    return 2 * rows * hidden * intermediate / min(seconds) / 1e9


def encoder_bench(
    encoder, texts: Sequence[str], batch_sizes: Sequence[int] = (1, 8, 32, 128), repeats: int = 5
) -> dict:
    """Messages/s and seconds per batch at each batch size, on the given texts, with the
    bound and each row's fraction of it."""
    texts = list(texts)
    counts = encoder.token_counts(texts)
    shape = encoder.shape
    flops = encoder_flops(counts, **shape)
    mean_tokens = float(counts.mean())
    gflops = matmul_gflops(int(round(mean_tokens)) * 32, shape["hidden"], shape["intermediate"])
    bound = gflops * 1e9 / float(flops.mean())
    rows = []
    rng = np.random.default_rng(0)
    saved = encoder.batch_size
    try:
        for size in batch_sizes:
            encoder.batch_size = size
            # Several batches of `size` random texts per repeat, so short and long mix.
            n = max(size, min(len(texts), 4 * size))
            sample = [texts[i] for i in rng.choice(len(texts), n, replace=len(texts) < n)]
            seconds = _median_seconds(lambda s=sample: encoder.encode(s), repeats)
            per_second = n / seconds
            rows.append(
                {
                    "batch_size": size,
                    "messages_per_s": round(per_second, 1),
                    "ms_per_batch": round(1000 * seconds * size / n, 2),
                    "fraction_of_bound": round(per_second / bound, 3),
                }
            )
    finally:
        encoder.batch_size = saved
    return {
        "texts": len(texts),
        "tokens_per_message": {
            "mean": round(mean_tokens, 1),
            "median": float(np.median(counts)),
            "p95": float(np.percentile(counts, 95)),
        },
        "mflop_per_message": round(float(flops.mean()) / 1e6, 1),
        "matmul_gflops_fp32": round(gflops, 1),
        "bound_messages_per_s": round(bound, 1),
        "rows": rows,
    }


def attention_bench(n: int = 64, m: int = 32, repeats: int = 50) -> dict:
    """The parameter-free attention step alone on a batch of n messages with m keys each."""
    rng = np.random.default_rng(0)
    sims = rng.uniform(-0.2, 0.9, size=(n, m)).astype(np.float32)
    valid = np.ones((n, m), bool)
    is_fraud = rng.random((n, m)) < 0.5
    seconds = _median_seconds(
        lambda: attend(sims, valid, is_fraud, temperature=0.05, null_similarity=0.5), repeats
    )
    return {"batch": n, "keys": m, "us_per_message": round(1e6 * seconds / n, 2)}
