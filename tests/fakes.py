"""Shared fakes: stand-ins for the encoder, Kafka's clients and records, for unit tests of
pure logic (the integration tests use the real broker, model and index)."""

# == Added by the runtime helper (issue 18, phase 2): fakes for tests/workers ===============
# The library helper adds its own section to this file too; the lead merges them.

import hashlib
import time
from collections.abc import Callable

import numpy as np
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from fraud.schemas import Alert


class FakeEncoder:
    """The encoder protocol (name, dim, encode(texts) -> (n, dim) float32 unit rows) with
    no model: each text's vector comes from its hash, the same text the same vector."""

    name = "fake-encoder"

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []  # the texts of each encode() call

    def encode(self, texts, progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).normal(size=self.dim))
        out = np.asarray(rows, np.float32).reshape(len(rows), self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


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


def decision(message_id: str, is_alert: bool, category: str | None = None) -> Alert:
    """A decision as the detector builds it, without a model: what publishing needs."""
    return Alert(
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
