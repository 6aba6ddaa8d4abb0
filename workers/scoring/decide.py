"""A batch's decisions, in input order, with a message that fails isolated from the rest.

The fast path is one encoding (on the encoder thread, started while the worker polls the
next batch) and one scoring call for the whole batch. When either raises, a known-good
probe tells a broken model (ModelBrokenError: the worker stops, nothing committed) from a
message that breaks it; then the batch is split until the failing messages are found
(fraud/scoring/isolation.py): they become dead letters, and the rest is scored.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime

import numpy as np

from fraud.metrics import WorkerMetrics
from fraud.scoring.detector import Detector
from fraud.scoring.history import Arrival, HistoryScorer
from fraud.scoring.isolation import Failure, ModelBrokenError, check_model, isolate, raised_at
from workers.scoring.batch import Batch, Decided, Failed, arrival
from workers.state import HistoryState

log = logging.getLogger(__name__)


class BatchDecider:
    """The worker's scoring: the encoder thread (the model is used from that one thread),
    the detector, and the recipients' history when the worker keeps one."""

    def __init__(
        self, detector: Detector, history: HistoryState | None, metrics: WorkerMetrics
    ) -> None:
        self.detector, self.history, self.metrics = detector, history, metrics
        self._encoder_thread = ThreadPoolExecutor(1, thread_name_prefix="encoder")

    def start(self, batch: Batch) -> None:
        """Hand the batch's decoded texts to the encoder thread (batch.encoded)."""
        if batch.decoded:
            texts = [m.text for _, m in batch.decoded]
            encode = self.detector.encode
            batch.encoded = self._encoder_thread.submit(batch.stage.timed, "encode", encode, texts)

    def drop(self, batch: Batch | None) -> None:
        """Wait until the encoder thread is done with `batch`, whose work is not used."""
        if batch is not None and batch.encoded is not None:
            wait([batch.encoded])

    def close(self) -> None:
        self._encoder_thread.shutdown(wait=True, cancel_futures=True)

    def decide(self, batch: Batch) -> tuple[list[Decided], list[Failed]]:
        """The decision on each decoded message of `batch`, in input order, and the
        messages whose encoding or scoring raised (see the module's docstring)."""
        decoded = batch.decoded
        if not decoded:
            return [], []
        queries, encoded, failed = self._encodings(batch)
        arrivals = [arrival(record, message) for record, message in decoded]

        def attempt(rows: Sequence[int]) -> list[Decided]:
            try:
                return self._score_rows(batch, queries, encoded, arrivals, rows)
            except Exception:
                self._forget(arrivals[encoded[r]] for r in rows)
                raise

        rows = list(range(len(encoded)))
        outcomes: list[Decided | Failure] = []
        if rows:
            try:
                outcomes = list(attempt(rows))
            except Exception as e:
                self._batch_failed("scoring", e, len(rows))
                outcomes = isolate(rows, attempt, e)
        decided = []
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, Failure):
                failed.append(Failed(*decoded[encoded[row]], "scoring", outcome))
            else:
                decided.append(outcome)
        failed.sort(key=lambda f: (f.record.partition, f.record.offset))
        if self.history is not None:
            self.history.seen([arrival(d.record, d.message) for d in decided])
        return decided, failed

    def _encodings(self, batch: Batch) -> tuple[np.ndarray, list[int], list[Failed]]:
        """The batch's query embeddings: (queries, which message of batch.decoded each row
        is, the messages that could not be encoded)."""
        decoded = batch.decoded
        try:
            queries = batch.encoded.result()
        except Exception as e:
            batch.stage.skip()  # waiting for the encoder thread is not a stage of this batch
            self._batch_failed("encoding", e, len(decoded))
            texts = [m.text for _, m in decoded]
            outcomes = isolate(range(len(decoded)), lambda rows: self._encode(texts, rows), e)
            batch.stage.lap("encode")
            encoded, vectors, failed = [], [], []
            for i, outcome in enumerate(outcomes):
                if isinstance(outcome, Failure):
                    failed.append(Failed(*decoded[i], "encoding", outcome))
                else:
                    encoded.append(i)
                    vectors.append(outcome)
            queries = np.array(vectors, np.float32).reshape(len(vectors), self.detector.encoder.dim)
            return queries, encoded, failed
        batch.stage.skip()  # waiting for the encoder thread is not a stage of this batch
        if batch.rows is not None:  # a rebalance took some of its partitions
            queries = queries[batch.rows]
        return queries, list(range(len(decoded))), []

    def _encode(self, texts: list[str], rows: Sequence[int]) -> np.ndarray:
        """Embed texts[rows] on the encoder thread (the model is used from one thread)."""
        chosen = [texts[i] for i in rows]
        return self._encoder_thread.submit(self.detector.encode, chosen).result()

    def _score_rows(
        self,
        batch: Batch,
        queries: np.ndarray,
        encoded: list[int],
        arrivals: list[Arrival],
        rows: Sequence[int],
    ) -> list[Decided]:
        """Score queries[rows] in input order, with the recipients' history, and build
        their decisions (the messages are batch.decoded[encoded[row]])."""
        picked = [batch.decoded[encoded[r]] for r in rows]
        history = None if self.history is None else self.history.history
        result = HistoryScorer(self.detector, history).score(
            [arrivals[encoded[r]] for r in rows],
            queries[list(rows)],
            [m.text for _, m in picked],
        )
        batch.stage.charge(result.timings)
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        ms = (time.monotonic() - batch.started) * 1000
        decide = self.detector.decide
        return [
            Decided(record, message, decide(message, a, scored_at=scored_at, processing_ms=ms))
            for (record, message), a in zip(picked, result.assessments, strict=True)
        ]

    def _forget(self, arrivals: Iterable[Arrival]) -> None:
        """A group whose scoring raised leaves no history behind: its messages are scored
        again in smaller groups, in input order, and those that fail alone never count."""
        if self.history is not None:
            for a in arrivals:
                self.history.history.forget(a)

    def _batch_failed(self, what: str, error: Exception, size: int) -> None:
        """A batch's encoding or scoring raised: stop if the model fails a known-good
        probe too (ModelBrokenError), else go on to isolate the failing messages."""
        log.error(
            "%s a batch of %d messages failed (%s at %s): probing the model, then splitting "
            "the batch to find the messages that fail",
            what,
            size,
            type(error).__name__,
            raised_at(error),
        )
        try:
            check_model(self._score_probe, error, f"{what} a batch")
        except ModelBrokenError:
            self.metrics.batch_failures.labels("fatal").inc()
            raise
        self.metrics.batch_failures.labels("isolated").inc()

    def _score_probe(self, texts: list[str]) -> None:
        self.detector.score(self._encode(texts, range(len(texts))), texts)
