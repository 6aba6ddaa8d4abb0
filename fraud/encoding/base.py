"""The one interface of an encoder, and the check every embedding passes at the edge."""

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TextEncoder(Protocol):
    """What the index, the detector and the fitting commands need of an encoder.

    `Encoder` (fraud/encoding/encoder.py), `RoutedEncoder` (routed.py), `CachedEncoder`
    (cache.py) and the tests' `FakeEncoder` (tests/fakes.py) satisfy it.

    name: the embedding space; an index records it and refuses an encoder of another.
    dim: the width of an embedding.
    encode(texts, progress): an (n, dim) float32 array of L2-normalized rows, in input
    order (a dot product of two rows is their cosine); progress(k), when given, is called
    as k more texts are done.
    """

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], object] | None = None
    ) -> np.ndarray: ...


def check_embeddings(vectors: object, n: int, dim: int, encoder: str) -> np.ndarray:
    """`vectors` if it is what an encoder must return for n texts, an (n, dim) float32
    array; TypeError naming the encoder and what it returned otherwise (the check faiss
    makes of its inputs, made where the embeddings enter the scoring path)."""
    if not isinstance(vectors, np.ndarray) or vectors.shape != (n, dim):
        shape = getattr(vectors, "shape", type(vectors).__name__)
        raise TypeError(f"encoder {encoder} returned {shape} for {n} texts, not ({n}, {dim})")
    if vectors.dtype != np.float32:
        raise TypeError(f"encoder {encoder} returned {vectors.dtype} embeddings, not float32")
    return vectors
