"""Which FAISS index a reference index uses (`IndexSpec`), and building it.

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

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

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
