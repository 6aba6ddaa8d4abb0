"""int8 with one activation scale per token: the `onnx-int8-row` encoder variant.

ONNX Runtime's dynamic quantization (the `onnx-int8` variant) gives a MatMul's input one
scale per forward pass: the largest value anywhere in the batch sets it, so a message's
embedding moves with its batchmates (min cosine 0.962 between alone and in a batch, issue
21). Static quantization (scales calibrated once on sample texts) is batch-independent but
lost too much here: one-off runs of ONNX Runtime's `quantize_static` (QDQ, per-channel
weights, MinMax calibration on 300 seed texts) kept a mean cosine to fp32 of 0.93 on UCI
texts, 0.99 with the feed-forward output projections left in float; a range fixed in
advance is too wide for most tokens, because a few tokens have very large activations.

This rewrite gives each token's row its own scale, computed at run time from that row
alone (its largest absolute value / 127): the same token gets the same int8 codes whatever
else is in the batch, and a row of small values keeps its precision. Each MatMul with a
constant weight matrix (the Q, K, V, attention-output and feed-forward projections)
becomes

    s   = max(|x|, last axis) / 127                   one scale per token (row)
    xq  = uint8(round(x / s) + 128)                   int8 codes, offset to uint8
    y   = float(MatMulInteger(xq, Wq, 128)) * s * w   uint8 x int8: VNNI/AMX kernels

with Wq the weights quantized to int8 with one scale per output channel (w). A token's
input is quantized once for all the MatMuls that read it (Q, K and V share theirs).
The vocabulary's embedding table (a Gather from a constant of at least MIN_TABLE_ROWS rows)
is kept in int8 with one scale per row, each looked-up row scaled back to float: a
quarter of the memory (multilingual-e5-small's 250,000 x 384 table is most of its
weights), and a token's row still depends on nothing else. Layer norms, softmax and
attention's own products stay float. Nothing
is calibrated: the rewrite needs only the fp32 graph, so a fine-tuned model is quantized
the same way from its own weights.
"""

from pathlib import Path

import numpy as np

# Part of the cached file's name (encoder.py export_onnx): a change to the rewrite below
# must change it, so that no file made by an older rewrite is used.
ROW_QUANTIZATION_VERSION = 2
# A Gather from a constant table with at least this many rows is a vocabulary's embedding
# table (quantized); position and token-type tables are smaller and stay float.
MIN_TABLE_ROWS = 1000

_SHARED = {  # constants every rewritten MatMul uses
    "rowq_inv127": np.array(1 / 127, np.float32),
    "rowq_eps": np.array(1e-12, np.float32),
    "rowq_offset": np.array(128, np.float32),
    "rowq_zero_point": np.array(128, np.uint8),
}


def quantize_per_row(fp32: Path, out: Path) -> None:
    """Write `fp32`'s graph to `out` with every MatMul by a constant matrix in int8, with
    per-token activation scales and per-channel weight scales (module docstring)."""
    import onnx  # lazily: only building this variant's file needs it
    from onnx import numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    nodes, added, quantized = [], [], {}
    for node in graph.node:
        if _is_vocabulary_lookup(node, weights):
            table = numpy_helper.to_array(weights[node.input[0]]).astype(np.float32)
            prefix = _name(node.name or node.output[0])
            added += _quantized_table(table, prefix)
            nodes += _int8_lookup(prefix, node.input[1], node.output[0])
            continue
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantized:
            quantized[x] = _name(x)
            nodes += _quantize_rows(x, quantized[x])
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127  # per output channel
        codes = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        prefix = _name(node.name or node.output[0])
        added += [
            numpy_helper.from_array(codes, f"{prefix}_wq"),
            numpy_helper.from_array(scale.astype(np.float32), f"{prefix}_ws"),
        ]
        nodes += _int8_matmul(quantized[x], prefix, node.output[0])
    used = {name for node in nodes for name in node.input}
    kept = [w for w in graph.initializer if w.name in used]
    shared = [numpy_helper.from_array(v, k) for k, v in _SHARED.items()]
    del graph.initializer[:]
    graph.initializer.extend(kept + added + shared)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _is_vocabulary_lookup(node, weights: dict) -> bool:
    """A Gather of rows (axis 0) from a constant table of at least MIN_TABLE_ROWS rows."""
    if node.op_type != "Gather" or node.input[0] not in weights:
        return False
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    dims = weights[node.input[0]].dims
    return axis == 0 and len(dims) == 2 and dims[0] >= MIN_TABLE_ROWS


def _quantized_table(table: np.ndarray, prefix: str) -> list:
    """A (rows, width) float table as int8 codes with one scale per row."""
    from onnx import numpy_helper

    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127
    codes = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    return [
        numpy_helper.from_array(codes, f"{prefix}_table"),
        numpy_helper.from_array(scale.astype(np.float32), f"{prefix}_table_scale"),
    ]


def _int8_lookup(prefix: str, ids: str, output: str) -> list:
    """Nodes that look `ids` up in the int8 table `prefix` and write float rows to `output`."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Gather", [f"{prefix}_table", ids], [f"{prefix}_codes"], axis=0),
        helper.make_node("Cast", [f"{prefix}_codes"], [f"{prefix}_rowsf"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [f"{prefix}_table_scale", ids], [f"{prefix}_scales"], axis=0),
        helper.make_node("Mul", [f"{prefix}_rowsf", f"{prefix}_scales"], [output]),
    ]


def _name(tensor: str) -> str:
    return "rowq" + tensor.replace("/", "_").replace(".", "_").replace(":", "_")


def _quantize_rows(x: str, q: str) -> list:
    """Nodes that quantize tensor `x` per row: `{q}_codes` (uint8, offset 128) and
    `{q}_scale` (one float a row)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Abs", [x], [f"{q}_abs"]),
        helper.make_node("ReduceMax", [f"{q}_abs"], [f"{q}_max"], axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{q}_max", "rowq_eps"], [f"{q}_max1"]),
        helper.make_node("Mul", [f"{q}_max1", "rowq_inv127"], [f"{q}_scale"]),
        helper.make_node("Div", [x, f"{q}_scale"], [f"{q}_scaled"]),
        helper.make_node("Round", [f"{q}_scaled"], [f"{q}_rounded"]),
        helper.make_node("Add", [f"{q}_rounded", "rowq_offset"], [f"{q}_offset"]),
        helper.make_node("Cast", [f"{q}_offset"], [f"{q}_codes"], to=TensorProto.UINT8),
    ]


def _int8_matmul(q: str, prefix: str, output: str) -> list:
    """Nodes that multiply the quantized rows `q` by the int8 weights `prefix` and write
    the float product to `output`."""
    from onnx import TensorProto, helper

    return [
        helper.make_node(
            "MatMulInteger", [f"{q}_codes", f"{prefix}_wq", "rowq_zero_point"], [f"{prefix}_i32"]
        ),
        helper.make_node("Cast", [f"{prefix}_i32"], [f"{prefix}_f32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{prefix}_f32", f"{q}_scale"], [f"{prefix}_rows"]),
        helper.make_node("Mul", [f"{prefix}_rows", f"{prefix}_ws"], [output]),
    ]
