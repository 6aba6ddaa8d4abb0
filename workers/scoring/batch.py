"""One micro-batch of the scoring worker, from its poll to its commit: the records, what
decoded and what became a dead letter, the encoder thread's work on it, and the time each
stage took (StageClock)."""

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from kafka.consumer.fetcher import ConsumerRecord

from fraud.errors import SchemaError
from fraud.schemas import Decision, Message, parse_message
from fraud.scoring.history import Arrival
from fraud.scoring.isolation import Failure
from workers.runtime import DeadLetter, StageClock, on_bad_record


@dataclass
class Batch:
    """One micro-batch between the worker's start() and finish(): its records, the
    messages decoded, the dead letters of those that did not decode, and the encoder
    thread's work on the decoded texts."""

    records: list[ConsumerRecord]
    started: float  # time.monotonic()
    decoded: list[tuple[ConsumerRecord, Message]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    encoded: Future | None = None  # -> queries, one row per `decoded` message
    rows: list[int] | None = None  # which rows of the queries are still `decoded`'s
    stage: StageClock = field(default_factory=StageClock)

    @classmethod
    def decode(cls, records: list[ConsumerRecord], max_message_bytes: int) -> "Batch":
        """The batch of `records`, each decoded or made a dead letter (on_bad_record)."""
        batch = cls(records=records, started=time.monotonic())
        for record in records:
            try:
                batch.decoded.append((record, parse_message(record.value, max_message_bytes)))
            except SchemaError as e:
                batch.dead_letters.append(on_bad_record(e, record))
        batch.stage.lap("decode")
        return batch

    def keep(self, partitions: set[int]) -> None:
        """Forget the records of partitions this worker no longer owns."""
        rows = range(len(self.decoded)) if self.rows is None else self.rows
        kept = [
            (i, d) for i, d in zip(rows, self.decoded, strict=True) if d[0].partition in partitions
        ]
        self.rows = [i for i, _ in kept]
        self.decoded = [d for _, d in kept]
        self.dead_letters = [d for d in self.dead_letters if d.record.partition in partitions]
        self.records = [r for r in self.records if r.partition in partitions]


@dataclass
class BatchResult:
    """What finishing a batch did (for tests and benchmarks; the metrics say it too)."""

    consumed: int = 0
    scored: int = 0
    alerts: list[Decision] = field(default_factory=list)
    dead_letters: int = 0


@dataclass(frozen=True)
class Decided:
    """A message scored: its record, and the decision on it."""

    record: ConsumerRecord
    message: Message
    alert: Decision


@dataclass(frozen=True)
class Failed:
    """A message whose encoding or scoring raised, found by isolating it from its batch."""

    record: ConsumerRecord
    message: Message
    stage: str  # "encoding" or "scoring"
    failure: Failure

    def dead_letter(self) -> DeadLetter:
        return on_bad_record(
            self.failure.error, self.record, f"{self.stage} message {self.message.id}"
        )


def arrival(record: ConsumerRecord, message: Message) -> Arrival:
    """Where a message stands in its recipient's stream: the input offset orders it."""
    recipient = message.passthrough().get("recipient")
    return Arrival(
        message_id=message.id,
        recipient=str(recipient) if isinstance(recipient, str | int) and recipient != "" else None,
        at_ms=record.timestamp if record.timestamp and record.timestamp > 0 else 0,
        seq=record.offset,
        shard=record.partition,
    )
