"""The reference index: labeled reference messages in a FAISS inner-product index.

On disk an index is a directory (format 3, written and checked by fraud/index/files.py):

    index.faiss       the FAISS index, int64 ids (its type: fraud/index/spec.py)
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

Category codes come from the index's codebook (`Categories`, fraud/index/keys.py): given as
references bring categories, only looked up while scoring.
"""

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from scipy import sparse

from fraud.datasets import LabeledText
from fraud.errors import DataError, IndexMismatchError
from fraud.index.files import (
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST_FILE,
    REFERENCES_FILE,
    read_manifest,
    sha256_file,
    verify_files,
    write_index_dir,
)
from fraud.index.keys import DENSE, Categories, Keys, KeySimilarity
from fraud.index.spec import HNSW_QUANTIZER_M, IndexSpec, faiss_memory_bytes, flat_faiss, ivf_faiss
from fraud.text.ngrams import DEFAULT_NGRAM_RANGE, CharNgrams, mix, pair_cosines
from fraud.text.normalize import NORMALIZATION_VERSION

log = logging.getLogger(__name__)


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
        self.categories = Categories()  # category code -> name (code 0: unspecified)
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

    def references(self) -> Iterable[Reference]:
        """Every reference, in no particular order."""
        return self._refs.values()

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
        similarity: KeySimilarity = DENSE,
    ) -> Keys:
        """The k nearest references of each query row (fewer where the index is smaller).

        exclude_ids: one reference id per query (or -1) that must not be among its keys:
        a training message is never a key for itself.
        similarity: with an n-gram term (weight > 0), the keys' similarity mixes in the
        character n-gram cosine of the query texts (`texts`, raw, one per row) and the
        references (fraud/text/ngrams.py). The keys are still the k nearest by the dense
        embedding. Without (DENSE): the dense cosine, as is.
        """
        if similarity.reads_text and texts is None:
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
        if similarity.reads_text:
            if len(texts) != n:
                raise ValueError(f"{len(texts)} texts for {n} queries")
            ngram = self.ngram_similarities(texts, np.where(valid, ids, -1), similarity.ngram_range)
            sims = mix(np.asarray(sims, np.float32), ngram, similarity.weight)
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

    def attach_vectors(self, keys: Keys) -> Keys:
        """`keys` from this index with each key's stored embedding attached (`vectors`,
        (n, m, dim), zeros where a key is missing or disabled): what a learned head reads,
        and what joining them with keys from elsewhere (Keys.concat) needs. Keys that
        have their vectors already are returned as they are."""
        if keys.vectors is not None:
            return keys
        n, m = keys.shape
        flat = self.key_vectors(np.where(keys.valid, keys.ids, 0).ravel())
        return replace(keys, vectors=flat.reshape(n, m, self.dim) * keys.valid[..., None])

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
        """A reference's category code: its category's, given one if new, for a fraud;
        0 for a legit one (never read: only fraud keys carry a category)."""
        return self.categories.add(ref.category) if ref.label == "fraud" else 0

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
