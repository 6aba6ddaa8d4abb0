"""Shared fakes for unit tests of pure logic: an encoder without a model, unit vectors, a
fresh metrics registry, Kafka's clients and records. The integration tests use the real
broker, model and index (tests/conftest.py)."""

import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from fraud.schemas import Decision


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows of length 1 (embeddings as an encoder returns them)."""
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def distinct_tail(i: int, words: int = 5) -> str:
    """Words of random letters, different for each i: appended to a template, they keep
    the texts out of each other's near-duplicate group (fraud.fitting.near_duplicate_groups
    masks digits, so "text {i}" would make one group of them all)."""
    rng = np.random.default_rng(i)
    return " ".join(
        "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(words)
    )


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


class InjectedFault(RuntimeError):
    """A fault a test injects: a bug that one input triggers."""


class PoisonedEncoder:
    """A real (or fake) encoder that raises `fault` on a batch holding a text `poisoned`
    picks (a marker it contains, or a predicate), quoting the batch's texts as a real
    fault could (the worker must not log them). `poisoned_batches`: the size of each."""

    def __init__(
        self,
        encoder,
        poisoned: str | Callable[[str], bool],
        fault: type[Exception] = InjectedFault,
    ) -> None:
        self.encoder, self.fault = encoder, fault
        self.poisoned = poisoned if callable(poisoned) else (lambda text: poisoned in text)
        self.poisoned_batches: list[int] = []

    def encode(self, texts, *args, **kwargs):
        if any(self.poisoned(t) for t in texts):
            self.poisoned_batches.append(len(texts))
            raise self.fault(f"cannot encode {list(texts)!r}")
        return self.encoder.encode(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


class SlowEncoder:
    """An encoder behind a fixed delay per call: inference slower than the poll interval's
    budget, injected by the test rather than by a setting of the worker."""

    def __init__(self, encoder, delay_s: float) -> None:
        self.encoder, self.delay_s = encoder, delay_s

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def encode(self, texts, *args, **kwargs):
        time.sleep(self.delay_s)
        return self.encoder.encode(texts, *args, **kwargs)


def consumer_record(
    value: bytes | None = b"{}",
    *,
    topic: str = "messages",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
    timestamp: int | None = 1_767_225_600_000,
) -> ConsumerRecord:
    """A record as kafka-python's consumer hands it out."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        leader_epoch=0,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        serialized_header_size=-1,
    )


class FakeFuture:
    """A send's future, settled at once: acknowledged, or failed with `error`."""

    def __init__(self, error: KafkaError | None = None) -> None:
        self.exception, self.is_done = error, True

    def failed(self) -> bool:
        return self.exception is not None

    def get(self, timeout: float | None = None):
        if self.exception is not None:
            raise self.exception
        return "metadata"

    def add_callback(self, fn, *args) -> "FakeFuture":
        if self.exception is None:
            fn(*args, "metadata")
        return self

    def add_errback(self, fn, *args) -> "FakeFuture":
        if self.exception is not None:
            fn(*args, self.exception)
        return self


class RecordingProducer:
    """A producer that records what it was asked to do (`calls`: each call's name, in
    order) and what it sent (`sent`); sends to a topic in `refused` fail."""

    def __init__(self, refused: frozenset[str] = frozenset()) -> None:
        self.refused = refused
        self.sent: list[dict] = []
        self.calls: list[str] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None) -> FakeFuture:
        self.calls.append("send")
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        if topic in self.refused:
            return FakeFuture(KafkaError(f"{topic}: refused by the test"))
        return FakeFuture()

    def flush(self, timeout=None) -> None:
        self.calls.append("flush")

    def init_transactions(self) -> None:
        self.calls.append("init_transactions")

    def begin_transaction(self) -> None:
        self.calls.append("begin_transaction")

    def close(self, timeout=None) -> None:
        self.calls.append("close")


class RecordingConsumer:
    """A consumer that owns `partitions` of `topic` and records its commits; each of
    `refusals` (exceptions) is raised by one commit, in turn, before they succeed."""

    def __init__(self, topic: str = "messages", partitions=(0,), refusals=()) -> None:
        self.owned = {TopicPartition(topic, p) for p in partitions}
        self.refusals = list(refusals)
        self.commits: list[dict] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def commit(self, offsets) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


def decision(message_id: str, is_alert: bool, category: str | None = None) -> Decision:
    """A decision as the detector builds it, without a model: what publishing needs."""
    return Decision(
        alert_id=f"alert-{message_id}",
        message_id=message_id,
        score=0.9 if is_alert else 0.1,
        is_alert=is_alert,
        threshold=0.5,
        category=category if is_alert else None,
        category_distribution={},
        evidence=[],
        model="fake-encoder",
        index_version="v-test",
        scored_at="2026-01-01T00:00:00.000+00:00",
        processing_ms=1.0,
        passthrough={},
    )
