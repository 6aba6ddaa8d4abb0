"""The reference index: known frauds and legit messages in FAISS, the keys a search
returns, the index directory on disk, and the bank changelog's records."""

from fraud.index.build import build_index, embed_into, encode_with_progress
from fraud.index.changelog import (
    BankChange,
    apply_change,
    change_key,
    changed_upsert,
    decode_change,
    encode_upsert,
)
from fraud.index.files import (
    MANIFEST_FILE,
    check_writable,
    head_summary,
    read_manifest,
    write_index_dir,
)
from fraud.index.keys import DENSE, UNSPECIFIED, Categories, Keys, KeySimilarity
from fraud.index.reference_index import Reference, ReferenceIndex
from fraud.index.spec import IndexSpec, faiss_memory_bytes, flat_faiss, ivf_faiss

__all__ = (
    "DENSE",
    "MANIFEST_FILE",
    "UNSPECIFIED",
    "BankChange",
    "Categories",
    "IndexSpec",
    "KeySimilarity",
    "Keys",
    "Reference",
    "ReferenceIndex",
    "apply_change",
    "build_index",
    "change_key",
    "changed_upsert",
    "check_writable",
    "decode_change",
    "embed_into",
    "encode_upsert",
    "encode_with_progress",
    "faiss_memory_bytes",
    "flat_faiss",
    "head_summary",
    "ivf_faiss",
    "read_manifest",
    "write_index_dir",
)
