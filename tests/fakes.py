"""Shared fakes for unit tests of pure logic: an encoder without a model, unit vectors, a
fresh metrics registry. Integration tests use the real parts (tests/conftest.py)."""

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows of length 1 (embeddings as an encoder returns them)."""
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class FakeEncoder:
    """A TextEncoder (fraud/encoding/base.py) without a model: the same text always gets
    the same random unit vector (seeded by the text), and `seen` records every batch."""

    def __init__(self, name: str = "fake", dim: int = 8, seed: int = 0) -> None:
        self.name, self.dim, self.seed = name, dim, seed
        self.batch_size = 8
        self.seen: list[list[str]] = []

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        self.seen.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = unit_vectors(1, self.dim, seed=self.seed + sum(map(ord, text)))[0]
        if progress is not None:
            progress(len(texts))
        return out


@pytest.fixture
def fresh_registry() -> CollectorRegistry:
    """A registry of the test's own, as prometheus client_python's tests use: metrics
    built on it start at zero and never meet another test's."""
    return CollectorRegistry()


def assess(detector, texts: Sequence[str]) -> list:
    """The detector's assessment of each text: its hot path (encode, then score) in one
    call, for tests that start from texts."""
    return detector.score(detector.encode(texts), texts).assessments
