import numpy as np
import pytest

pytestmark = pytest.mark.model


def test_unit_rows_of_the_model_dimension(encoder):
    vectors = encoder.encode(["hello", "your parcel is held at the depot", ""])
    assert vectors.shape == (3, encoder.dim) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(3), abs=1e-5)


TEXTS = [
    "a much longer message about a parcel that could not be delivered today",
    "hi",
    "your code is 123456",
    "Northbank: suspicious login detected. Verify your account now",
]


@pytest.fixture(scope="module")
def variants(encoder, tmp_path_factory):
    """Every variant of the bundled model (the ONNX ones exported into a fresh cache)."""
    from fraud.encoding import ENCODER_VARIANTS, Encoder

    cache = tmp_path_factory.mktemp("encoders")
    return {v: Encoder(variant=v, cache_dir=cache) for v in ENCODER_VARIANTS}


# How far a text's embedding may move with its batchmates: the default and the fp32
# variants not in any way that matters (issue 21's goal: 0.9999); onnx-int8 shares one
# activation scale per forward pass; onnx-int8-row's scales are per token.
BATCH_INVARIANCE = {
    "torch-fp32": 0.99999,
    "onnx-fp32": 0.99999,
    "torch-bf16": 0.9999,
    "onnx-int8": 0.95,
    "onnx-int8-row": 0.9999,
}


@pytest.mark.parametrize("variant", sorted(BATCH_INVARIANCE))
def test_batching_sorts_by_length_but_keeps_input_order(variants, variant):
    encoder = variants[variant]
    batched = encoder.encode(TEXTS)
    one_by_one = np.vstack([encoder.encode([t]) for t in TEXTS])
    assert (batched * one_by_one).sum(axis=1).min() > BATCH_INVARIANCE[variant]


def test_every_variant_embeds_close_to_fp32(variants):
    """The bar of the README's Performance section (workers/bench/encoder.py MIN_COSINE): a
    variant's embeddings have a mean cosine of at least 0.99 to torch-fp32's, here on 64 messages of
    the seed set in Latin script (the model's own texts; a word like "hi" alone is further:
    0.978 for onnx-int8)."""
    from fraud.data import seed_references_path
    from fraud.datasets import read_labeled_csv
    from fraud.encoding.routed import is_other_script
    from workers.bench.encoder import MIN_COSINE

    seed = [r.text for r in read_labeled_csv(seed_references_path())]
    texts = [t for t in seed if not is_other_script(t)][:64]
    reference = variants["torch-fp32"].encode(texts)
    for name, encoder in variants.items():
        vectors = encoder.encode(texts)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32, name
        assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(len(texts)), abs=1e-4)
        cosine = (vectors * reference).sum(axis=1)
        assert cosine.mean() >= MIN_COSINE, (name, cosine.mean(), cosine.min())
    # The ONNX fp32 export computes the same function as torch.
    onnx = variants["onnx-fp32"].encode(TEXTS)
    assert np.abs(onnx - variants["torch-fp32"].encode(TEXTS)).max() < 1e-4


def test_onnx_export_is_cached_by_weights(tmp_path):
    from fraud.encoding.encoder import bundled_model_path, export_onnx

    first = export_onnx(bundled_model_path(), tmp_path, "onnx-int8")
    mtime = first.stat().st_mtime_ns
    again = export_onnx(bundled_model_path(), tmp_path, "onnx-int8")
    assert again == first and again.stat().st_mtime_ns == mtime
    assert sorted(p.name.split("-", 1)[1] for p in tmp_path.glob("*.onnx")) == [
        "fp32.onnx",
        "int8.onnx",
    ]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_fine_tuned_model_gets_onnx_files_of_its_own(tmp_path):
    """The cache is keyed by the weights: the same architecture with other weights (what a
    fine-tuned model is) is exported and quantized from its own directory."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from fraud.encoding.encoder import Encoder, bundled_model_path, export_onnx

    tuned = tmp_path / "tuned"
    shutil.copytree(bundled_model_path(), tuned)
    weights = load_file(tuned / "model.safetensors")
    name = next(k for k in weights if k.endswith("output.dense.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, tuned / "model.safetensors", metadata={"format": "pt"})
    cache = tmp_path / "encoders"
    bundled = export_onnx(bundled_model_path(), cache, "onnx-int8-row")
    own = export_onnx(tuned, cache, "onnx-int8-row")
    assert own != bundled and own.is_file()
    text = ["your parcel is held at the depot, pay the fee"]
    a = Encoder(variant="onnx-int8-row", cache_dir=cache).encode(text)
    b = Encoder(tuned, variant="onnx-int8-row", cache_dir=cache).encode(text)
    assert float(a[0] @ b[0]) < 0.9999  # its own weights, not the bundled model's


def test_an_unknown_variant_is_refused():
    from fraud.encoding.encoder import Encoder
    from fraud.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown encoder variant 'gpu-fp8'"):
        Encoder(variant="gpu-fp8")


def test_normalization_is_applied_before_encoding(encoder):
    plain, tricked = encoder.encode(["verify your account", "ｖｅｒｉｆｙ your\u200b account"])
    assert float(plain @ tricked) > 0.999


TRIPLES = [  # (scam, its paraphrase, a legit look-alike)
    pytest.param(
        "Hi mum, I lost my phone, this is my new number. Can you send me £250 for a bill today?",
        "Mum it's me, phone broke so using a new one. Could you transfer money for rent urgently?",
        "Hi mum, my phone died so I'm texting from Sam's. Home by 7, save me some dinner!",
        id="impersonation",
    ),
    pytest.param(
        "Northbank: suspicious login detected. Verify your account now at northbank-verify.co "
        "or it will be locked",
        "Your bank access is restricted after unusual sign-in. Confirm your details at "
        "secure-nb-login.com",
        "Northbank: your one-time passcode is 481920. Never share it with anyone, even us.",
        id="phishing",
    ),
    pytest.param(
        "Congratulations! Your number won £5,000 in our prize draw. "
        "Pay a £20 release fee to claim.",
        "You have been selected as a winner of a cash prize! Send the processing charge to get it.",
        "Congratulations on the new job! Drinks on Friday to celebrate?",
        id="lottery",
    ),
    pytest.param(
        "HMRC: you are owed a tax refund of £312. "
        "Submit your card details at hmrc-refund-claim.com",
        "Government notice: a rebate of £280 is waiting for you. Enter your bank info to get it.",
        "HMRC: your Self Assessment tax return for 2025 has been received. No action is needed.",
        id="tax_refund",
    ),
    pytest.param(
        "Your parcel could not be delivered. Pay the £1.99 redelivery fee at parcelgo-fee.com",
        "We were unable to deliver your package; settle a small £2 charge here: pgo-pay.net",
        "ParcelGo: your parcel was delivered to your safe place at 14:02. No action needed.",
        id="delivery-known-weakness",
        # all-MiniLM-L6-v2 puts this scam nearer the genuine notice (0.69) than its
        # paraphrase (0.66): shared words outweigh intent. Kept as a strict xfail so the
        # day a better encoder fixes it, this test says so.
        marks=pytest.mark.xfail(strict=True, reason="word overlap beats intent in MiniLM"),
    ),
]


@pytest.mark.parametrize(("scam", "paraphrase", "lookalike"), TRIPLES)
def test_a_scam_is_closer_to_its_paraphrase_than_to_a_legit_lookalike(
    encoder, scam, paraphrase, lookalike
):
    s, p, legit = encoder.encode([scam, paraphrase, lookalike])
    assert float(s @ p) > float(s @ legit)


STRANGERS = [
    "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! Txt CLAIM",
    "ok",
    "Sorry, I'll call later",
    "Your account has been suspended. Verify now at secure-login-check.com or lose access "
    "permanently; this is your final notice from the security team " * 3,
    "Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles",
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize",
]


@pytest.mark.parametrize("variant", ["torch-bf16", "onnx-int8-row"])
def test_a_message_embeds_alone_as_in_a_batch_of_strangers(variants, variant):
    """Issue 21's goal for the default variant and for a batch-independent int8: a
    message's embedding alone equals its embedding in a batch of strangers, min cosine
    >= 0.9999. The strangers are very long and very short: for onnx-int8 they would set a
    per-batch activation scale far from the message's own; for torch-bf16 the message
    shares a row with some of them (encoder.py `_packs`)."""
    encoder = variants[variant]
    for text in TEXTS:
        alone = encoder.encode([text])[0]
        batched = encoder.encode([*STRANGERS, text, *STRANGERS])[len(STRANGERS)]
        assert float(alone @ batched) >= 0.9999, text


def test_the_default_variant_embeds_uci_messages_alone_as_in_their_batches(variants):
    """The same over 300 UCI messages encoded in one call (chunks of 16 texts, several to
    a row where they fit) and one by one: issue 21's bar of 0.9999 for every message
    (with padded chunks it was 0.99989 on another 300: docs/performance.md, "Packed
    chunks")."""
    from fraud.data import uci_sms_spam_path
    from fraud.datasets import read_labeled_csv

    texts = [r.text for r in read_labeled_csv(uci_sms_spam_path())][1000:1300]
    encoder = variants["torch-bf16"]
    chunks = encoder._packs(encoder._token_ids([encoder.model_input(t) for t in texts]))
    assert sum(len(c[1][0]) for c in chunks) < len(texts) / 2  # shared rows: fewer than half
    batched = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    assert (batched * alone).sum(axis=1).min() >= 0.9999


def test_onnx_int8_row_stays_close_to_fp32(variants):
    """Mean cosine to torch-fp32 >= 0.995 (issue 21's goal) on 200 UCI messages (the
    model's own texts, not the seed set above)."""
    from fraud.data import uci_sms_spam_path
    from fraud.datasets import read_labeled_csv

    texts = [r.text for r in read_labeled_csv(uci_sms_spam_path())][:200]
    reference = variants["torch-fp32"].encode(texts)
    cosine = (variants["onnx-int8-row"].encode(texts) * reference).sum(axis=1)
    assert cosine.mean() >= 0.995, (cosine.mean(), cosine.min())


def test_onnx_int8_row_keeps_the_vocabulary_table_in_int8(variants):
    """The embedding table, most of multilingual-e5-small's memory, is stored in int8 with
    a scale per row: no float table of vocabulary size is left in the graph."""
    import onnx
    from onnx import TensorProto

    from fraud.encoding.quantize import MIN_TABLE_ROWS

    tables = [
        w
        for w in onnx.load(str(variants["onnx-int8-row"].onnx_file)).graph.initializer
        if len(w.dims) == 2 and w.dims[0] >= MIN_TABLE_ROWS and w.dims[1] > 1  # not scales
    ]
    assert tables and all(w.data_type == TensorProto.INT8 for w in tables)


def test_onnx_int8_row_embeddings_are_cached_under_its_quantization_version(variants):
    """An embedding cache (CachedEncoder) keys by cache_key: embeddings made by an older
    version of the rewrite are not this one's."""
    from fraud.encoding.quantize import ROW_QUANTIZATION_VERSION

    key = variants["onnx-int8-row"].cache_key
    assert key.endswith(f"|onnx-int8-row-v{ROW_QUANTIZATION_VERSION}")
    assert variants["onnx-int8"].cache_key.endswith("|onnx-int8")
    # torch-bf16's packed chunks embed otherwise than the padded ones did (in the fifth
    # digit): embeddings cached from those are not this encoder's either.
    assert variants["torch-bf16"].cache_key.endswith("|torch-bf16-packed")


def test_two_encoder_streams_embed_as_one_does(variants):
    """Settings.encoder_streams: a batch's chunks encoded side by side, each call on its
    share of the threads, give the embeddings of one call at a time, in input order."""
    import torch

    from fraud.data import seed_references_path
    from fraud.datasets import read_labeled_csv
    from fraud.encoding import Encoder

    texts = [r.text for r in read_labeled_csv(seed_references_path())][:40]
    threads = torch.get_num_threads()
    try:
        two = Encoder(streams=2, batch_size=8)
        streamed = two.encode(texts)
    finally:
        torch.set_num_threads(threads)  # the streams took one thread each
    assert len(two._packs(two._token_ids(texts))) == 5  # 40 texts, chunks of 8
    one = variants["torch-bf16"].encode(texts)
    assert (streamed * one).sum(axis=1).min() > BATCH_INVARIANCE["torch-bf16"]


def test_copies_of_a_text_in_one_call_get_one_embedding():
    """Encoder.encode encodes identical inputs once: two copies of a text that would fall
    into chunks padded to different widths (here: chunks of 2, sorted by length) still
    get bit-identical embeddings, so one request scores the same text the same."""
    from fraud.encoding import Encoder

    short, long = "see you at 5", "Your parcel is held at the depot, pay the £1.99 fee at the link"
    texts = [long, short, short, "ok"]  # chunks: (long, short) and (short, "ok")
    encoder = Encoder(batch_size=2)
    out = encoder.encode(texts)
    assert np.array_equal(out[1], out[2])
    seen = []
    encoder.encode(texts, progress=seen.append)
    assert sum(seen) == len(texts)  # progress counts every copy


@pytest.mark.parametrize("model", ["english", "multilingual"])
def test_the_bf16_graph_computes_what_the_module_does(model):
    """torch-bf16 runs the model as a frozen TorchScript graph, traced on one packed
    example (encoder.py `_frozen_graph`, `_packed_module`): on the encoder's own packed
    chunks of other sizes and widths, several texts to a row or one, it must give the
    embeddings that the transformers module in eager mode gives the same texts padded
    (`_chunks`, one text a row)."""
    import torch

    from fraud.config import Settings
    from fraud.data import seed_references_path
    from fraud.datasets import read_labeled_csv
    from fraud.encoding import Encoder
    from fraud.encoding.bundled import bundled_model_path
    from fraud.encoding.encoder import (
        _eager_module,
        _frozen_graph,
        _packed_module,
        multilingual_model_dir,
    )

    path = (
        bundled_model_path()
        if model == "english"
        else multilingual_model_dir(Settings().multilingual_model_path)
    )
    module = _eager_module(path, torch.bfloat16)
    graph = _frozen_graph(_packed_module(path, torch.bfloat16))
    assert isinstance(graph, torch.jit.ScriptModule)
    texts = [r.text for r in read_labeled_csv(seed_references_path())][::9]
    encoder = Encoder(path, variant="torch-bf16", batch_size=13, lazy=True)  # its chunks
    ids = encoder._token_ids([encoder.model_input(t) for t in texts])
    expected = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    with torch.inference_mode():
        for idx, arrays in encoder._chunks(ids):
            expected[idx] = module(*(torch.from_numpy(a) for a in arrays)).numpy()
        packs = encoder._packs(ids) + encoder._packs(ids[:1])  # the longest text alone too
        shapes, shared = set(), 0
        for idx, arrays in packs:
            out = graph(*(torch.from_numpy(a) for a in arrays)).numpy()
            cosine = (out * expected[idx]).sum(1)
            assert float(cosine.min()) > 0.9999, (model, arrays[0].shape)
            shapes.add(arrays[0].shape)
            shared += len(idx) - len(arrays[0])  # texts beyond one a row
    assert len(shapes) >= 3 and shared > 0


def test_torch_bf16_loads_its_cached_graph_without_transformers(tmp_path):
    """The graph is saved once (encoder.py `graph_file`); a process that finds it encodes
    with torch alone: transformers is never imported (its memory stays out of a worker)."""
    import subprocess
    import sys

    from fraud.encoding.bundled import bundled_model_path
    from fraud.encoding.encoder import graph_file

    cache = tmp_path / "encoders"
    made = graph_file(bundled_model_path(), cache)
    assert made.is_file() and graph_file(bundled_model_path(), cache) == made
    script = (
        "import sys\n"
        "from fraud.encoding import Encoder\n"
        f"e = Encoder(variant='torch-bf16', cache_dir={str(cache)!r})\n"
        "v = e.encode(['your parcel is held at the depot', 'hi'])\n"
        "assert v.shape == (2, e.dim) and 'torch' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]", run.stdout[-500:]
    assert sorted(p.name for p in cache.iterdir()) == [made.name]


def test_torch_bf16_without_a_writable_cache_traces_in_memory(tmp_path, caplog):
    """A cache directory that cannot be made (a read-only image without `fraud model
    export`): the graph is traced in memory with a warning, and embeds as the cached one."""
    import logging

    from fraud.encoding import Encoder

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    texts = ["your parcel is held at the depot", "hi"]
    with caplog.at_level(logging.WARNING, "fraud.encoding.encoder"):
        vectors = Encoder(variant="torch-bf16", cache_dir=blocker / "encoders").encode(texts)
    assert "could not be cached" in caplog.text and "fraud model export" in caplog.text
    cached = Encoder(variant="torch-bf16", cache_dir=tmp_path / "encoders").encode(texts)
    np.testing.assert_allclose(vectors, cached, atol=1e-6)
