"""`fraud bench`, the parts without Kafka: the encoder against its compute bound, and the
attention step. Retrieval is workers/bench/retrieval.py; end to end through the broker is
workers/bench/end_to_end.py. Every figure is a median over repeats, measured in one run.

The compute bound. A BERT-style encoder with L layers, hidden size d and feed-forward size
f spends, per message of n tokens, 2 FLOPs per multiply-add in
    Q, K, V and output projections   4 * n * d * d   multiply-adds
    the feed-forward block           2 * n * d * f
    attention scores and mixing      2 * n * n * d
per layer (embeddings, layer norms and pooling are small). What this machine's matrix
multiply reaches on the encoder's own shapes (n*batch x d times d x f, in fp32) bounds how
many messages per second any implementation of that arithmetic can do.
"""

import time
from collections.abc import Callable, Sequence

import numpy as np

from fraud.encoding import ENCODER_VARIANTS, REFERENCE_ENCODER_VARIANT
from fraud.quality import SHIPPED, evaluate, evaluation_variants
from fraud.scoring.attention import attend
from workers.bench.timing import RepeatTimer


def encoder_flops(n_tokens: np.ndarray, layers: int, hidden: int, intermediate: int) -> np.ndarray:
    """FLOPs of one forward pass per message of n_tokens tokens (no padding)."""
    n = np.asarray(n_tokens, dtype=np.float64)
    per_layer = 2 * (4 * n * hidden * hidden + 2 * n * hidden * intermediate + 2 * n * n * hidden)
    return layers * per_layer


# What a faster encoder variant must keep to be used (issue 7): embeddings close to fp32's,
# and the shipped scorer's cross-validated PR-AUC within 0.002 of its fp32 figure.
MIN_COSINE = 0.99
MAX_PR_AUC_DROP = 0.002
# And one of ours: a message's embedding must not depend on which other messages share
# its batch (cosine between encoding it alone and in a batch), or replaying a batch or
# moving a partition to another worker changes verdicts (the history's determinism).
MIN_ALONE_VS_BATCH = 0.999

PRECISION = {
    "onnx-int8-row": "int8",
    "onnx-int8": "int8",
    "onnx-fp32": "fp32",
    "torch-bf16": "bf16",
    "torch-fp32": "fp32",
}


def matmul_gflops(
    rows: int, hidden: int, intermediate: int, precision: str = "fp32", repeats: int = 50
) -> float:
    """What this machine's matrix multiply reaches on the encoder's feed-forward shape, in
    G(FL)OP/s: torch for fp32 and bf16, ONNX Runtime's MatMulInteger (uint8 activations
    times int8 weights, what the int8 variant runs) for int8."""
    if precision == "int8":
        return _int8_matmul_gops(rows, hidden, intermediate, repeats)
    import torch  # lazily, as the encoder loads it: only this bound needs it here

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a = torch.randn(rows, hidden, dtype=dtype)
    b = torch.randn(hidden, intermediate, dtype=dtype)
    timer = RepeatTimer(warmup=1, runs=repeats)
    with torch.inference_mode():
        for _ in timer:
            a @ b
    # The best of the repeats: what the hardware can do, not what a busy moment allowed.
    return 2 * rows * hidden * intermediate / timer.min_s() / 1e9


def _int8_matmul_gops(rows: int, hidden: int, intermediate: int, repeats: int) -> float:
    # Lazily: ONNX is needed only for the int8 bound, and only where it is installed.
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (hidden, intermediate), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, intermediate])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (rows, hidden), dtype=np.uint8)
    timer = RepeatTimer(warmup=1, runs=repeats)
    for _ in timer:
        session.run(None, {"A": a})
    return 2 * rows * hidden * intermediate / timer.min_s() / 1e9


def encoder_bench(
    encoder,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 16, 32, 128),
    repeats: int = 5,
) -> dict:
    """Messages/s and seconds per batch at each batch size, on the given texts, with the
    bound for the encoder's precision and each row's fraction of it (and of the fp32
    bound, the yardstick every variant shares), and the CPU cores it used: on a shared
    machine two parts of a run may get different shares of the cores, and each part's CPU
    use tells how much of a difference between them is that."""
    cpu, wall = time.process_time(), time.perf_counter()
    texts = list(texts)
    counts = encoder.token_counts(texts)
    shape = encoder.shape
    flops = encoder_flops(counts, **shape)
    mean_tokens = float(counts.mean())
    rows_ = int(round(mean_tokens)) * 32
    precision = PRECISION[encoder.variant]
    gflops = matmul_gflops(rows_, shape["hidden"], shape["intermediate"], precision)
    fp32 = (
        gflops
        if precision == "fp32"
        else matmul_gflops(rows_, shape["hidden"], shape["intermediate"])
    )
    bound = gflops * 1e9 / float(flops.mean())
    bound_fp32 = fp32 * 1e9 / float(flops.mean())
    rows = []
    rng = np.random.default_rng(0)
    saved = encoder.batch_size
    try:
        for size in batch_sizes:
            encoder.batch_size = size
            # At least 256 random texts (4 batches) per repeat, so short and long mix.
            n = max(4 * size, min(len(texts), 256))
            sample = [texts[i] for i in rng.choice(len(texts), n, replace=len(texts) < n)]
            timer = RepeatTimer(warmup=1, runs=repeats)
            for _ in timer:
                encoder.encode(sample)
            seconds = timer.median_s()
            per_second = n / seconds
            rows.append(
                {
                    "batch_size": size,
                    "messages_per_s": round(per_second, 1),
                    "ms_per_batch": round(1000 * seconds * size / n, 2),
                    "fraction_of_bound": round(per_second / bound, 3),
                    "fraction_of_fp32_bound": round(per_second / bound_fp32, 3),
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
        "variant": encoder.variant,
        "precision": precision,
        "matmul_gflops": round(gflops, 1),
        "matmul_gflops_fp32": round(fp32, 1),
        "bound_messages_per_s": round(bound, 1),
        "bound_fp32_messages_per_s": round(bound_fp32, 1),
        "rows": rows,
        "cpu_cores": round((time.process_time() - cpu) / (time.perf_counter() - wall), 2),
    }


def variants_bench(
    make_encoder: Callable[[str], object], texts: Sequence[str], repeats: int = 5
) -> dict[str, dict]:
    """Every encoder variant at its configured batch size: speed against its precision's
    bound and the fp32 bound, its embeddings' cosine to the reference variant's, and how
    far a text's embedding moves with its batchmates (cosine between encoding it alone
    and in a batch). `make_encoder(variant)` builds one."""
    texts = list(texts)
    out: dict[str, dict] = {}
    reference = None
    others = [v for v in ENCODER_VARIANTS if v != REFERENCE_ENCODER_VARIANT]
    for variant in (REFERENCE_ENCODER_VARIANT, *others):
        encoder = make_encoder(variant)
        speed = encoder_bench(encoder, texts, (encoder.batch_size,), repeats)
        vectors = encoder.encode(texts)
        if reference is None:
            reference = vectors
        few = texts[:64]
        alone = np.vstack([encoder.encode([t]) for t in few])
        cosine = (vectors * reference).sum(axis=1)
        invariance = (alone * vectors[: len(few)]).sum(axis=1)
        row = speed["rows"][0]
        out[variant] = {
            "precision": speed["precision"],
            "batch_size": encoder.batch_size,
            "messages_per_s": row["messages_per_s"],
            "fraction_of_bound": row["fraction_of_bound"],
            "fraction_of_fp32_bound": row["fraction_of_fp32_bound"],
            "bound_messages_per_s": speed["bound_messages_per_s"],
            "cosine_mean": round(float(cosine.mean()), 5),
            "cosine_min": round(float(cosine.min()), 4),
            "alone_vs_batch_cosine_mean": round(float(invariance.mean()), 5),
            "alone_vs_batch_cosine_min": round(float(invariance.min()), 4),
        }
        out[variant]["keeps_embeddings"] = bool(
            cosine.mean() >= MIN_COSINE and invariance.min() >= MIN_ALONE_VS_BATCH
        )
    return {v: out[v] for v in ENCODER_VARIANTS}


def variant_quality(dataset, embeddings: dict[str, np.ndarray], folds: int = 5) -> dict:
    """Per encoder variant: its embeddings' cosine to the reference variant's, and the
    shipped scorer's cross-validated PR-AUC with them (same folds, same seed), with the
    drop against the reference. `embeddings` maps variant -> (n, dim) rows of `dataset`."""
    reference = embeddings[REFERENCE_ENCODER_VARIANT]
    out: dict[str, dict] = {}
    for variant, X in embeddings.items():
        report, _ = evaluate(
            dataset,
            X,
            variants=evaluation_variants(),
            folds=folds,
            seed=0,
            threshold_rule={},
            variant_names=[SHIPPED],
        )
        cosine = (X * reference).sum(axis=1)
        out[variant] = {
            "cosine_mean": round(float(cosine.mean()), 5),
            "cosine_min": round(float(cosine.min()), 4),
            "pr_auc": round(report["variants"][SHIPPED]["pr_auc"], 4),
        }
    base = out[REFERENCE_ENCODER_VARIANT]["pr_auc"]
    for row in out.values():
        row["pr_auc_drop"] = round(base - row["pr_auc"], 4)
        row["qualifies"] = (
            row["cosine_mean"] >= MIN_COSINE and row["pr_auc_drop"] <= MAX_PR_AUC_DROP
        )
    return out


def attention_bench(n: int = 64, m: int = 32, repeats: int = 50) -> dict:
    """The parameter-free attention step alone on a batch of n messages with m keys each."""
    rng = np.random.default_rng(0)
    sims = rng.uniform(-0.2, 0.9, size=(n, m)).astype(np.float32)
    valid = np.ones((n, m), bool)
    is_fraud = rng.random((n, m)) < 0.5
    timer = RepeatTimer(warmup=1, runs=repeats)
    for _ in timer:
        attend(sims, valid, is_fraud, temperature=0.05, null_similarity=0.5)
    return {"batch": n, "keys": m, "us_per_message": round(1e6 * timer.median_s() / n, 2)}
