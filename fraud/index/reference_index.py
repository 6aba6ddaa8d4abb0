"""The reference index: labeled reference messages in a FAISS inner-product index.

On disk an index is a directory (format 3):

    index.faiss       the FAISS index, int64 ids (see "Index types" below)
    references.jsonl  one JSON object per reference: id, text, label, category, source
    head.json, head.safetensors, lexical.safetensors
                      a trained attention head, when `fraud train` made one (fraud/scoring/head.py)
    manifest.json     model, dim, normalization version, counts, scorer parameters,
                      index type and its parameters, the bank it is linked to, and the
                      SHA-256 of every other file above

Loading refuses an index built with another model, dimension or normalization, a manifest
of an older format (one that did not cover every file), and a file that is missing or does
not match its digest. Writing goes through fraud/index/files.py: atomic, and never over
another index or a user's own files.

The character n-gram vectors of the references (the key similarity's n-gram term,
fraud/text/ngrams.py) are not a file: they are computed from references.jsonl when a search
first asks for the term, with an IDF fitted on the references of that snapshot. A live
change (upsert, remove) re-vectorizes that reference only, under the same IDF; the next
snapshot (save) fits the IDF again, as loading it does. So the directory format is unchanged, and
an index written before the term existed gets it too.

Index types (`IndexSpec`, recorded in the manifest under "index"):

- flat: faiss.IndexIDMap2(IndexFlatIP), exact search. The default, and what a manifest
  without an "index" entry (the format before index types) is loaded as.
- ivf: faiss.IndexIVFFlat over an HNSW coarse quantizer, approximate search: a query is
  compared with the vectors of the `nprobe` lists nearest to it, of `nlist`. Vectors are
  stored uncompressed (so `key_vectors` returns them exactly) and a hash-table direct map
  lets references be removed, replaced and reconstructed by id, as the bank needs. HNSW
  as the index type was ruled out: FAISS's HNSW cannot remove vectors.

The rule for ivf: the lists are trained (k-means on a sample of at most
`train_per_list * nlist` of the index's own vectors) once the index holds at least
`min_size` references, at the end of an `add`, an `upsert` or a `load`; until then it is
flat (exact), so a bank that starts empty works from the first reference. The lists are
not retrained as the bank grows: a rebuild (`fraud index build`) does that.
"""

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fraud.datasets import LabeledText
from fraud.errors import DataError, IndexMismatchError
from fraud.text.ngrams import DEFAULT_NGRAM_RANGE, CharNgrams, mix, pair_cosines
from fraud.text.normalize import NORMALIZATION_VERSION, normalize

log = logging.getLogger(__name__)

# 2: the manifest records the SHA-256 of index.faiss and references.jsonl;
# 3: of every file of the directory, the trained head's included, and the bank it is linked to
FORMAT_VERSION = 3
INDEX_FILE, REFERENCES_FILE, MANIFEST_FILE = "index.faiss", "references.jsonl", "manifest.json"
INDEX_TYPES = ("flat", "ivf")
HNSW_QUANTIZER_M = 32  # links per node of the ivf coarse quantizer (an HNSW over centroids)


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index an index uses, with its parameters (see the module docstring).

    nlist None: chosen when the lists are trained, lists of about 256 vectors:
    2 ** round(log2(n / 256)) for n references (32 at 10 k, 512 at 100 k, 4,096 at 1 M),
    clipped to [16, 65,536]; `nprobe` 16 then compares a query with about 4,000 vectors
    whatever the size.
    """

    type: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    min_size: int = 10_000
    train_per_list: int = 32

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {', '.join(INDEX_TYPES)}: {self.type!r}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {self.nlist}")
        if self.nprobe < 1 or self.min_size < 0 or self.train_per_list < 1:
            raise ValueError(f"invalid index parameters: {self}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "IndexSpec":
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def nlist_for(self, n: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return int(np.clip(2 ** round(math.log2(max(n, 1) / 256)), 16, 65_536))


def flat_faiss(dim: int) -> faiss.Index:
    """The exact index: inner product over every vector, ids kept by an IndexIDMap2."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def ivf_faiss(
    spec: IndexSpec, ids: np.ndarray, vectors: np.ndarray, progress: bool = False, seed: int = 13
) -> faiss.IndexIVFFlat:
    """An IndexIVFFlat (HNSW coarse quantizer, hash-table direct map) trained on a sample of
    `vectors` and holding all of them under `ids`."""
    n, dim = vectors.shape
    nlist = spec.nlist_for(n)
    if n < nlist:
        raise ValueError(f"an ivf index with nlist {nlist} needs at least {nlist} vectors, got {n}")
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_QUANTIZER_M, faiss.METRIC_INNER_PRODUCT)
    quantizer.hnsw.efConstruction, quantizer.hnsw.efSearch = 40, 64
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.seed = 10, seed
    index.cp.min_points_per_centroid = 1  # the sample is chosen here: no FAISS warnings
    index.cp.max_points_per_centroid = spec.train_per_list
    sample_size = min(n, spec.train_per_list * nlist)
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, sample_size, replace=False))]
    from tqdm import tqdm

    with tqdm(total=n, unit="vec", desc=f"ivf{nlist}", disable=not progress) as bar:
        bar.set_postfix_str(f"training on {sample_size}")
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        bar.set_postfix_str("adding")
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        for start in range(0, n, 50_000):
            chunk = slice(start, start + 50_000)
            index.add_with_ids(
                np.ascontiguousarray(vectors[chunk], dtype=np.float32),
                np.ascontiguousarray(ids[chunk], dtype=np.int64),
            )
            bar.update(len(ids[chunk]))
    index.nprobe = min(spec.nprobe, nlist)
    return index


def faiss_memory_bytes(index: faiss.Index) -> int:
    """An estimate of the memory a FAISS index built here holds, from its structure: the
    float32 vectors and int64 ids, the id map (flat) or the centroids, their HNSW links
    and the direct map (ivf); hash tables counted at 32 bytes an entry."""
    n, dim = index.ntotal, index.d
    payload = n * (4 * dim + 8)
    if isinstance(index, faiss.IndexIVF):
        nlist = index.nlist
        links = nlist * HNSW_QUANTIZER_M * 2 * 4 * 1.1  # level 0 has 2M links, upper levels few
        return int(payload + nlist * (4 * dim + 8) + links + 32 * n)
    return int(payload + 32 * n)  # IndexIDMap2's reverse map


@dataclass(frozen=True)
class Reference:
    id: int
    text: str
    label: str  # "fraud" or "legit"
    category: str | None
    source: str  # where it came from: a file name, "feedback", ...
    changed_by: str | None = None  # who made the last change (an analyst), and why
    reason: str | None = None
    disabled: bool = False  # kept in the bank, never a key (e.g. it caused false positives)
    weight: float = 1.0  # multiplies the attention the reference gets (log(weight) is added
    # to its attention logit): > 1 for a reference analysts trust, < 1 for a doubtful one

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"reference {self.id}: weight must be > 0, got {self.weight}")


@dataclass
class _NgramVectors:
    """The references' character n-gram vectors: row r is reference ids[r] (sorted)."""

    model: CharNgrams
    ids: np.ndarray
    matrix: Any  # scipy.sparse.csr_matrix
    stale: set[int]  # references changed since: re-vectorized at the next use


@dataclass(frozen=True)
class Keys:
    """The keys of a batch, aligned (n, m): similarity, validity, label, category code, and
    the log of each key's weight (added to its attention logit; 0 for weight 1).

    The similarity is the dense cosine, mixed with the character n-gram cosine when the
    search asked for that term (`ReferenceIndex.search`, fraud/text/ngrams.py): it is what the
    attention reads and what the evidence shows.

    Keys come from the index (`ReferenceIndex.search`) and, for messages with a recipient,
    from that recipient's history (fraud/scoring/history.py); `vectors` and `from_history` are set
    once the two are joined (`Keys.join`), since history keys are not in the index.
    """

    similarities: np.ndarray
    ids: np.ndarray  # int64 reference id, -1 where missing or a history key
    valid: np.ndarray
    is_fraud: np.ndarray
    category_codes: np.ndarray
    log_weights: np.ndarray
    vectors: np.ndarray | None = None  # (n, m, dim) key embeddings, when not all in the index
    # (n, m) object: for a key from the recipient's history, the id of that earlier message;
    # None for a key from the bank
    message_ids: np.ndarray | None = None

    def join(self, other: "Keys", index: "ReferenceIndex") -> "Keys":
        """These keys followed by `other`'s, row by row, with every key's vector attached."""

        def parts(keys: "Keys") -> tuple[np.ndarray, np.ndarray]:
            n, m = keys.ids.shape
            vectors = keys.vectors
            if vectors is None:
                flat = index.key_vectors(np.where(keys.valid, keys.ids, 0).ravel())
                vectors = flat.reshape(n, m, index.dim) * keys.valid[..., None]
            ids = keys.message_ids
            return vectors, np.full((n, m), None, object) if ids is None else ids

        (va, ha), (vb, hb) = parts(self), parts(other)
        return Keys(
            **{
                name: np.concatenate([getattr(self, name), getattr(other, name)], axis=1)
                for name in (
                    "similarities",
                    "ids",
                    "valid",
                    "is_fraud",
                    "category_codes",
                    "log_weights",
                )
            },
            vectors=np.concatenate([va, vb], axis=1),
            message_ids=np.concatenate([ha, hb], axis=1),
        )


class ReferenceIndex:
    def __init__(
        self,
        model: str,
        dim: int,
        scorer: dict[str, Any] | None = None,
        index_spec: IndexSpec | None = None,
    ) -> None:
        self.model, self.dim = model, dim
        self.scorer_params: dict[str, Any] = dict(scorer or {})
        self.index_spec = index_spec or IndexSpec()
        self.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._faiss: faiss.Index = flat_faiss(dim)
        self._refs: dict[int, Reference] = {}
        self.categories: list[str] = []  # category code -> name
        # Lookup tables over the sorted reference ids, so a batch of retrieved ids maps to
        # labels in one vectorized step (np.searchsorted); ids may be sparse (feedback ids).
        self._ids = np.zeros(0, dtype=np.int64)
        self._is_fraud = np.zeros(0, dtype=bool)
        self._disabled = np.zeros(0, dtype=bool)
        self._category_code = np.zeros(0, dtype=np.int64)
        self._log_weight = np.zeros(0, dtype=np.float32)
        self._next_id = 0
        self._version: str | None = None
        # The bank changelog (issue 5): the next offset to apply, per partition, and how many
        # changes were applied since this index was built or loaded.
        self.changelog_offsets: dict[int, int] = {}
        # Which bank those offsets are in: {"topic", "cluster_id"}, set by `fraud index
        # publish` and `fraud index snapshot` (workers/state/bank.py).
        self.bank: dict[str, str] | None = None
        # Where load() read this index from: (directory, SHA-256 of its manifest.json), so
        # a command may write it back there unless the directory changed meanwhile
        # (fraud/index/files.py).
        self.origin: tuple[Path, str] | None = None
        self._changes = 0
        self._ngrams: _NgramVectors | None = None

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, ref_id: int) -> bool:
        return ref_id in self._refs

    def reference(self, ref_id: int) -> Reference:
        return self._refs[ref_id]

    @property
    def version(self) -> str:
        """A short content hash of the snapshot, then `+N` after N live changes applied from
        the changelog (hashing a large bank again on every change would cost too much)."""
        if self._version is None:
            h = hashlib.sha256(f"{self.model}|{self.dim}|{NORMALIZATION_VERSION}".encode())
            for ref_id in sorted(self._refs):
                h.update(json.dumps(asdict(self._refs[ref_id]), sort_keys=True).encode())
            self._version = h.hexdigest()[:12]
        return f"{self._version}+{self._changes}" if self._changes else self._version

    def counts(self) -> dict[str, Any]:
        labels = Counter(r.label for r in self._refs.values())
        cats = Counter(r.category for r in self._refs.values() if r.label == "fraud")
        return {
            "total": len(self),
            "fraud": labels["fraud"],
            "legit": labels["legit"],
            "disabled": sum(r.disabled for r in self._refs.values()),
            "fraud_by_category": dict(sorted(cats.items())),
        }

    @property
    def index_type(self) -> str:
        """The FAISS index in use now: "flat" or "ivf" (an ivf spec is flat until trained)."""
        return "ivf" if isinstance(self._faiss, faiss.IndexIVF) else "flat"

    def index_params(self) -> dict[str, Any]:
        """The parameters of the index in use (nlist, nprobe of a trained ivf)."""
        if isinstance(self._faiss, faiss.IndexIVF):
            return {
                "nlist": int(self._faiss.nlist),
                "nprobe": int(self._faiss.nprobe),
                "quantizer": f"HNSW{HNSW_QUANTIZER_M}",
            }
        return {}

    def memory_bytes(self) -> int:
        """Estimated memory of the FAISS index (see faiss_memory_bytes), labels excluded."""
        return faiss_memory_bytes(self._faiss)

    def add(
        self,
        items: Sequence[LabeledText],
        vectors: np.ndarray,
        source: str,
        progress: bool = False,
    ) -> list[int]:
        """Append references with their embeddings; returns the ids given to them."""
        vectors = self._check_vectors(vectors, "vectors")
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} references but {len(vectors)} vectors")
        start = self._next_id  # ids are never reused, even after a removal
        ids = np.arange(start, start + len(items), dtype=np.int64)
        self._faiss.add_with_ids(vectors, ids)
        for ref_id, item in zip(ids.tolist(), items, strict=True):
            self._refs[ref_id] = Reference(ref_id, item.text, item.label, item.category, source)
        self._rebuild_tables()
        self._version = None
        self._ngrams = None  # a new snapshot: its IDF is fitted again
        self._train_if_due(progress)
        return ids.tolist()

    def upsert(self, ref: Reference, vector: np.ndarray) -> None:
        """Add a reference with its own id, or replace the one with that id (a relabel or
        recategorize): incremental, the rest of the index is untouched."""
        vector = self._check_vectors(np.asarray(vector).reshape(1, -1), "vector")
        if ref.id in self._refs:
            self._faiss.remove_ids(np.array([ref.id], dtype=np.int64))
        self._faiss.add_with_ids(vector, np.array([ref.id], dtype=np.int64))
        self._refs[ref.id] = ref
        self._set_row(ref)
        self._changes += 1
        if self._ngrams is not None:
            self._ngrams.stale.add(ref.id)
        self._train_if_due()

    def remove(self, ref_id: int) -> bool:
        """Remove a reference by id; False if there was none."""
        if ref_id not in self._refs:
            return False
        self._faiss.remove_ids(np.array([ref_id], dtype=np.int64))
        del self._refs[ref_id]
        row = int(np.searchsorted(self._ids, ref_id))
        self._ids = np.delete(self._ids, row)
        self._is_fraud = np.delete(self._is_fraud, row)
        self._disabled = np.delete(self._disabled, row)
        self._category_code = np.delete(self._category_code, row)
        self._log_weight = np.delete(self._log_weight, row)
        self._changes += 1
        if self._ngrams is not None:
            self._ngrams.stale.add(ref_id)
        return True

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: np.ndarray | None = None,
        *,
        texts: Sequence[str] | None = None,
        ngram_weight: float = 0.0,
        ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
    ) -> Keys:
        """The k nearest references of each query row (fewer where the index is smaller).

        exclude_ids: one reference id per query (or -1) that must not be among its keys:
        a training message is never a key for itself.
        ngram_weight > 0: the keys' similarity mixes in the character n-gram cosine of the
        query texts (`texts`, raw, one per row) and the references (fraud/text/ngrams.py). The
        keys are still the k nearest by the dense embedding. 0: the dense cosine, as is.
        """
        if ngram_weight and texts is None:
            raise ValueError("a search with an n-gram term needs the query texts: pass texts")
        queries = self._check_vectors(queries, "queries")
        n = len(queries)
        m = min(k + (exclude_ids is not None), len(self))
        if m == 0:
            sims, ids = np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        else:
            sims, ids = self._faiss.search(queries, m)
        if exclude_ids is not None:
            ids = np.where(ids == np.asarray(exclude_ids)[:, None], -1, ids)
            # Move the excluded key (now -1) to the end, keep the order of the rest, cut to k.
            order = np.argsort(ids < 0, axis=1, kind="stable")[:, :k]
            sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
        rows = np.searchsorted(self._ids, ids).clip(0, max(len(self._ids) - 1, 0))
        # A disabled reference stays in FAISS (so it can be enabled again) but is no key.
        valid = (ids >= 0) & ~self._disabled[rows] if len(self) else ids >= 0
        if ngram_weight:
            if len(texts) != n:
                raise ValueError(f"{len(texts)} texts for {n} queries")
            ngram = self.ngram_similarities(texts, np.where(valid, ids, -1), ngram_range)
            sims = mix(np.asarray(sims, np.float32), ngram, ngram_weight)
        return Keys(
            similarities=np.where(valid, sims, 0.0).astype(np.float32),
            ids=ids,
            valid=valid,
            is_fraud=valid & self._is_fraud[rows] if len(self) else valid,
            category_codes=np.where(valid, self._category_code[rows], 0) if len(self) else rows,
            log_weights=np.where(valid, self._log_weight[rows], 0.0).astype(np.float32)
            if len(self)
            else np.zeros(ids.shape, np.float32),
        )

    def ngram_similarities(
        self,
        texts: Sequence[str],
        ids: np.ndarray,
        ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
    ) -> np.ndarray:
        """(n, m) float32: the character n-gram cosine of text i and reference ids[i, j]
        (0 where the id is -1 or not in the index)."""
        ids = np.asarray(ids, dtype=np.int64)
        n, m = ids.shape
        store = self._ngram_vectors(tuple(ngram_range))
        if not len(store.ids):
            return np.zeros((n, m), np.float32)
        rows = np.searchsorted(store.ids, ids).clip(0, len(store.ids) - 1)
        found = (ids >= 0) & (store.ids[rows] == ids)
        keys = store.matrix[np.where(found, rows, 0).ravel()]
        cosines = pair_cosines(store.model.transform(texts), keys, m)
        return np.where(found, cosines, 0.0).astype(np.float32)

    def prepare_ngrams(self, ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE) -> None:
        """Vectorize the references now (a scorer that uses the term calls it at start-up,
        so its first batch does not pay for it)."""
        self._ngram_vectors(tuple(ngram_range))

    def _ngram_vectors(self, ngram_range: tuple[int, int]) -> _NgramVectors:
        store = self._ngrams
        if store is None or store.model.ngram_range != ngram_range:
            ids = self._ids.copy()
            texts = [self._refs[int(i)].text for i in ids]
            model = CharNgrams.fit(texts, ngram_range)
            self._ngrams = _NgramVectors(model, ids, model.transform(texts), set())
            if len(ids) > 10_000:
                log.info("vectorized the character n-grams of %d references", len(ids))
        elif store.stale:
            from scipy import sparse

            changed = np.array(sorted(store.stale), dtype=np.int64)
            kept = ~np.isin(store.ids, changed)
            fresh = np.array([i for i in changed if int(i) in self._refs], dtype=np.int64)
            vectors = store.model.transform([self._refs[int(i)].text for i in fresh])
            ids = np.concatenate([store.ids[kept], fresh])
            order = np.argsort(ids, kind="stable")
            matrix = sparse.vstack([store.matrix[np.flatnonzero(kept)], vectors], format="csr")
            self._ngrams = _NgramVectors(store.model, ids[order], matrix[order], set())
        return self._ngrams

    def key_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored embeddings of references `ids` (any shape of int64 ids, all present)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros((*ids.shape, self.dim), np.float32)
        return self._faiss.reconstruct_batch(ids.ravel()).reshape(*ids.shape, self.dim)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every reference: in insertion order (flat), by id (ivf)."""
        if isinstance(self._faiss, faiss.IndexIVF):
            ids = self._ids.copy()
            return ids, self.key_vectors(ids)
        ids = faiss.vector_to_array(self._faiss.id_map).astype(np.int64)
        return ids, self._faiss.index.reconstruct_n(0, self._faiss.ntotal)

    # -- persistence ---------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "dim": self.dim,
            "normalization_version": NORMALIZATION_VERSION,
            "index_type": self._faiss_description(),
            "index": {
                "type": self.index_type,
                "params": self.index_params(),
                "spec": asdict(self.index_spec),
            },
            "index_version": self.version,
            "counts": self.counts(),
            "scorer": self.scorer_params,
            "created_at": self.created_at,
            "changelog_offsets": {str(p): o for p, o in sorted(self.changelog_offsets.items())},
            "bank": self.bank,
        }

    def save(self, directory: Path, *, force: bool = False) -> None:
        """Write the index to `directory`, atomically, keeping a user's own files there;
        refused when it holds another index, unless `force` (fraud/index/files.py)."""
        from fraud.index.files import write_index_dir

        write_index_dir(directory, self, force=force)

    def write_files(self, directory: Path) -> None:
        """Write index.faiss and references.jsonl into `directory` (which fraud/index/files.py
        is assembling). Applied changes become part of the snapshot's content hash."""
        if self._changes:
            self._version, self._changes = None, 0
            self._ngrams = None  # a new snapshot: its IDF is fitted again, as load() would
        faiss.write_index(self._faiss, str(directory / INDEX_FILE))
        with (directory / REFERENCES_FILE).open("w", encoding="utf-8") as f:
            for ref_id in sorted(self._refs):
                f.write(json.dumps(asdict(self._refs[ref_id]), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path, *, model: str, dim: int) -> "ReferenceIndex":
        """Load an index directory, refusing one built for another encoder, of an older
        format, or with a file that does not match the manifest."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        manifest = read_manifest(directory)
        built = (manifest.get("model"), manifest.get("dim"))
        if built != (model, dim):
            raise IndexMismatchError(
                f"{directory} was built with model {built[0]} (dim {built[1]}), the encoder is "
                f"{model} (dim {dim}): rebuild it with `fraud index build`"
            )
        if manifest.get("normalization_version") != NORMALIZATION_VERSION:
            raise IndexMismatchError(
                f"{directory} was built with text normalization "
                f"v{manifest.get('normalization_version')}, this version uses "
                f"v{NORMALIZATION_VERSION}: rebuild it with `fraud index build`"
            )
        verify_files(directory, manifest)
        # A manifest without "index" (written before index types existed) is a flat index.
        recorded = manifest.get("index") or {}
        try:
            spec = IndexSpec.from_dict(recorded.get("spec"))
        except (TypeError, ValueError) as e:
            raise DataError(f"{manifest_path}: invalid index parameters ({e})") from None
        index = cls(model, dim, manifest.get("scorer"), spec)
        index.created_at = manifest.get("created_at", index.created_at)
        offsets = manifest.get("changelog_offsets", {})
        index.changelog_offsets = {int(p): int(o) for p, o in offsets.items()}
        index.bank = manifest.get("bank")
        index.origin = (directory.resolve(), sha256_file(manifest_path))
        index._faiss = faiss.read_index(str(directory / INDEX_FILE))
        with (directory / REFERENCES_FILE).open(encoding="utf-8") as f:
            refs = [Reference(**json.loads(line)) for line in f if line.strip()]
        if index._faiss.ntotal != len(refs) or index._faiss.d != dim:
            raise DataError(
                f"{directory}: {index._faiss.ntotal} vectors of dim {index._faiss.d} but "
                f"{len(refs)} references: the directory is damaged, rebuild it"
            )
        if isinstance(index._faiss, faiss.IndexIVF):
            index._faiss.nprobe = int(recorded.get("params", {}).get("nprobe", spec.nprobe))
        index._refs = {ref.id: ref for ref in refs}
        index._rebuild_tables()
        index._train_if_due()
        return index

    # -- internals -----------------------------------------------------------------------

    def _faiss_description(self) -> str:
        if isinstance(self._faiss, faiss.IndexIVF):
            return (
                f"IndexIVFFlat(nlist={self._faiss.nlist}, quantizer=IndexHNSWFlat, "
                "direct_map=Hashtable)"
            )
        return "IndexIDMap2(IndexFlatIP)"

    def _train_if_due(self, progress: bool = False) -> None:
        """Replace the flat index by a trained ivf once the spec asks for one and the index
        holds enough references (the rule in the module docstring)."""
        spec = self.index_spec
        if spec.type != "ivf" or self.index_type == "ivf":
            return
        n = len(self._refs)
        if n < max(spec.min_size, spec.nlist_for(n), 1):
            return
        ids, vectors = self.vectors()
        log.info("training an ivf index on %d references", n)
        self._faiss = ivf_faiss(spec, ids, vectors, progress)

    def _check_vectors(self, a: np.ndarray, name: str) -> np.ndarray:
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != self.dim:
            shape = getattr(a, "shape", type(a).__name__)
            raise TypeError(f"{name} must be an (n, {self.dim}) array, got {shape}")
        return np.ascontiguousarray(a, dtype=np.float32)

    def _category_of(self, ref: Reference) -> int:
        return self.category_code(ref.category) if ref.label == "fraud" else 0

    def category_code(self, category: str | None) -> int:
        """The code of a fraud category (a new one is given the next code)."""
        if category not in self.categories:
            self.categories.append(category)
        return self.categories.index(category)

    def _rebuild_tables(self) -> None:
        ordered = sorted(self._refs)
        self._ids = np.array(ordered, dtype=np.int64)
        self._is_fraud = np.array([self._refs[i].label == "fraud" for i in ordered], dtype=bool)
        self._disabled = np.array([self._refs[i].disabled for i in ordered], dtype=bool)
        codes = [self._category_of(self._refs[i]) for i in ordered]
        self._category_code = np.array(codes, dtype=np.int64)
        weights = [self._refs[i].weight for i in ordered]
        self._log_weight = np.log(np.array(weights, dtype=np.float32))
        self._next_id = max(self._next_id, int(self._ids[-1]) + 1 if len(self._ids) else 0)

    def _set_row(self, ref: Reference) -> None:
        """Insert or update one reference's row in the sorted tables."""
        row = int(np.searchsorted(self._ids, ref.id))
        fraud, code = ref.label == "fraud", self._category_of(ref)
        if row < len(self._ids) and self._ids[row] == ref.id:
            self._is_fraud[row], self._category_code[row] = fraud, code
            self._disabled[row] = ref.disabled
            self._log_weight[row] = np.log(ref.weight)
        else:
            self._ids = np.insert(self._ids, row, ref.id)
            self._is_fraud = np.insert(self._is_fraud, row, fraud)
            self._disabled = np.insert(self._disabled, row, ref.disabled)
            self._category_code = np.insert(self._category_code, row, code)
            self._log_weight = np.insert(self._log_weight, row, np.log(ref.weight))


def embed_into(
    index: ReferenceIndex, encoder, items: Sequence[LabeledText], source: str, progress: bool
) -> list[int]:
    """Encode `items` (with a progress bar when asked) and add them to `index`.

    A text already in the index, or earlier in `items`, after normalization, is skipped:
    a duplicate reference adds nothing to search and would be its own twin's key when
    the scorer is fitted on the index.
    """
    seen = {normalize(ref.text) for ref in index._refs.values()}
    fresh = []
    for item in items:
        key = normalize(item.text)
        if key not in seen:
            seen.add(key)
            fresh.append(item)
    if len(fresh) < len(items):
        log.info("skipped %d duplicate texts", len(items) - len(fresh))
    if not fresh:
        return []
    vectors = encode_with_progress(encoder, [item.text for item in fresh], progress)
    return index.add(fresh, vectors, source, progress=progress)


def build_index(
    encoder,
    items: Sequence[LabeledText],
    source: str,
    scorer: dict[str, Any],
    progress: bool,
    index_spec: IndexSpec | None = None,
) -> ReferenceIndex:
    """A new index for `encoder` holding `items`, recording the scorer parameters and the
    index type (default: flat)."""
    index = ReferenceIndex(encoder.name, encoder.dim, scorer, index_spec)
    embed_into(index, encoder, items, source, progress)
    return index


def encode_with_progress(encoder, texts: list[str], progress: bool) -> np.ndarray:
    """encoder.encode(texts), with a progress bar on the terminal when asked."""
    from tqdm import tqdm

    with tqdm(total=len(texts), unit="msg", desc="encoding", disable=not progress) as bar:
        return encoder.encode(texts, progress=bar.update)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an index directory; DataError, in one line saying what to do, when
    there is none or it is not JSON."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        aside = sorted(directory.parent.glob(f".{directory.name}.old-*"))
        if aside and not directory.exists():  # see fraud/index/files.py, replace_directory
            raise DataError(
                f"{directory}: missing: a write of it was interrupted; the index it held is "
                f"in {aside[-1]}: rename that back to {directory}"
            )
        raise DataError(
            f"{directory}: not an index directory (no {MANIFEST_FILE}): "
            "create one with `fraud index build`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not an index manifest (a JSON object)")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], names=None) -> None:
    """Refuse (DataError, one line) a directory of an older format, or whose files (all
    the manifest lists, or `names` among them) are missing or differ from their SHA-256."""
    directory = Path(directory)
    version, files = manifest.get("format_version", 1), manifest.get("files")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{directory}: an index directory of format {version}, written by a newer "
            f"version of fraud-stream (this one reads format {FORMAT_VERSION}): upgrade it"
        )
    rebuild = (
        f"rebuild it with `fraud index build --out {directory} --force` (and `fraud train` "
        "again if it had a trained head)"
    )
    if version < FORMAT_VERSION:
        raise DataError(
            f"{directory}: an index directory of format {version}, from before its manifest "
            f"covered every file (format {FORMAT_VERSION}): {rebuild}"
        )
    if not isinstance(files, dict):
        raise DataError(f"{directory}: the manifest records no file digests: {rebuild}")
    if not {INDEX_FILE, REFERENCES_FILE} <= files.keys():
        raise DataError(f"{directory / MANIFEST_FILE}: lists no {INDEX_FILE} or {REFERENCES_FILE}")
    for name in files if names is None else names:
        if sha256_file(directory / name) != files[name]:
            raise DataError(
                f"{directory / name}: its SHA-256 does not match the manifest's: the index "
                "was changed or damaged after it was written; refusing to load it (rebuild "
                "it, or restore the file)"
            )


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file of an index directory (DataError when it is missing)."""
    if not path.is_file():
        raise DataError(f"{path}: missing: the index directory is incomplete, rebuild it")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
