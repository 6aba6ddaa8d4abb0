"""`fraud serve`: inline scoring over HTTP, a decision before a message is delivered.

The decision is the one the worker publishes (fraud/schemas.py `Decision`, built by
`Detector.decide` from `Detector.score`: the same scoring path), answered to the
caller; with `--publish` it is also written to the scores topic, and to the alert topic
when it is an alert, keyed by message id as the worker does.

    POST /v1/score         one message {id, text, recipient?, metadata?} -> its decision
    POST /v1/score:batch   {"messages": [...]} -> {"decisions": [...]}, in request order
    GET  /healthz          200 while the process answers and its scoring thread moves
    GET  /readyz           200 once the model and index are loaded, else 503
    GET  /metrics          Prometheus: the worker's metric names, plus fraud_http_* and
                           fraud_serve_*; scraped as its own job (fraud-serve)

Micro-batching. Requests put their messages on one queue. A batcher task takes up to
max_batch of them, waiting at most batch_wait_ms after the oldest one arrived (so only
when the scorer was idle), and hands them to the one scoring thread: the model runs
outside the event loop, which keeps answering. The thread encodes the batch in one call,
scores it and builds each decision. Changes to the reference bank (when the index is
linked to the bank topic, as for the worker: workers/state/bank.py) are applied on that same
thread, since the index is not thread-safe: before every batch, and every second or so
while idle. Whether the service keeps up with the bank is checked from another thread
(workers/state/bank.py BankWatch): when it does not (the broker away, the topic deleted), it
goes on scoring with the bank as last read, and says so: /readyz's `bank` and detail,
`fraud_bank_following` 0, one error line.

Publishing (--publish) never holds up scoring: the scoring thread hands each decision to
a publishing thread (DecisionPublisher), which owns the producer; at most
`publish_queue` records wait for the broker, and a decision beyond that is answered but
not published, counted in `fraud_serve_publish_dropped_total` and logged.

Not done here: the recipient's history. The worker keeps each recipient's earlier
suspicious messages as extra keys, which works because Kafka partitions the input by
recipient, so one worker sees all of a recipient's messages, in order. An HTTP service
has no such owner, so inline scoring uses the bank alone; a `recipient` is passed
through into the decision, not used to score.

Safe by default: it binds 127.0.0.1; bearer tokens (from FRAUD_SERVE__TOKEN or a token
file) protect /v1/* when set, compared in constant time; body, batch and text limits
answer 413 and 422; bad JSON 422 (or 400 for bytes that are not UTF-8), a body that is
not JSON 415, an overfull queue 503. The message text is never logged: the access log is
off, and a failure logs the message id and the error's class only.

A message whose scoring raises fails its own request only: the batch it was in is split
until it is found (fraud/scoring/isolation.py), its batchmates get their decisions, and its request
gets 500 with an error id, which the log line about it carries.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import queue
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud.config import ServeSettings, Settings
from fraud.errors import ConfigError, SchemaError
from fraud.metrics import (
    ServeMetrics,
    WorkerMetrics,
    build_serve_metrics,
    observe_bank_changes,
    set_index_gauges,
)
from fraud.schemas import Alert, Message, check_json_value
from fraud.scoring.detector import Detector
from fraud.scoring.isolation import Failure, isolate, raised_at

log = logging.getLogger(__name__)

# Bank changes are applied at least this often without traffic.
IDLE_POLL_S = 1.0
# A scoring thread with work queued and no batch finished for this long is stuck.
STALL_S = 60.0
# --publish: a send waits at most this long for the broker's metadata, on the publishing
# thread; an answer is never held for Kafka (a failed send is logged and counted).
PUBLISH_MAX_BLOCK_MS = 5000
# The routes, as the `route` label of the HTTP metrics (any other path: "other").
ROUTES = frozenset(
    {"/v1/score", "/v1/score:batch", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
)
DESCRIPTION = (
    "Each answer is the decision the Kafka scoring worker publishes for the same message "
    "(schema_version 2): score, is_alert at the configured threshold, category and its "
    "distribution, evidence, model and index version. Inline scoring uses the reference "
    "bank only, not the recipient's history."
)
EXAMPLE = {
    "id": "msg-0001",
    "text": "Your parcel is held at the depot: pay the 1.99 GBP fee at royalmail-redelivery.info",
    "recipient": "+44 7700 900123",
    "metadata": {"sender": "RoyalMail", "channel": "sms"},
}


# -- the scoring thread --------------------------------------------------------------------


class ScoringFailed(Exception):
    """A message could not be scored: the scoring thread logged why under `error_id`
    (with the message id and the exception's class, never its text)."""

    def __init__(self, message_id: str, error_id: str) -> None:
        super().__init__(f"message {message_id} could not be scored (error id {error_id})")
        self.message_id, self.error_id = message_id, error_id

    @classmethod
    def logged(cls, message_id: str, error: BaseException) -> "ScoringFailed":
        """A new error id for `error`, logged with the message id."""
        error_id = uuid.uuid4().hex[:16]
        log.error(
            "message %s could not be scored (%s at %s): error id %s",
            message_id,
            type(error).__name__,
            raised_at(error),
            error_id,
        )
        return cls(message_id, error_id)


class Scorer:
    """What the scoring thread owns: the detector, the bank follower (and the watch on it)
    and, with --publish, the publisher. Every method runs on that one thread."""

    def __init__(
        self,
        detector: Detector,
        metrics: WorkerMetrics,
        bank=None,
        publisher: "DecisionPublisher | None" = None,
        watch=None,
    ) -> None:
        self.detector, self.metrics, self.bank = detector, metrics, bank
        self.publisher, self.watch = publisher, watch
        set_index_gauges(metrics, detector)

    def score(
        self, messages: Sequence[Message], arrived: Sequence[float]
    ) -> list[Alert | ScoringFailed]:
        """Decisions for a batch, in order; ScoringFailed (logged with an error id) for a
        message that could not be scored. A batch that fails is split until the messages
        that fail alone are found (fraud/scoring/isolation.py), so one bad message does not fail
        its batchmates. `arrived`: each message's time.monotonic()."""
        self.poll_bank()
        try:
            return list(self._score(messages, arrived))
        except Exception as e:  # logged without its message: it could quote the text
            log.error(
                "scoring a batch of %d failed (%s at %s): splitting it to find the messages "
                "that fail",
                len(messages),
                type(e).__name__,
                raised_at(e),
            )
            self.metrics.batch_failures.labels("isolated").inc()
            items = list(zip(messages, arrived, strict=True))
            outcomes = isolate(
                items, lambda group: self._score([m for m, _ in group], [a for _, a in group]), e
            )
        return [
            ScoringFailed.logged(message.id, o.error) if isinstance(o, Failure) else o
            for (message, _), o in zip(items, outcomes, strict=True)
        ]

    def _score(self, messages: Sequence[Message], arrived: Sequence[float]) -> list[Alert]:
        m = self.metrics
        texts = [message.text for message in messages]
        started = time.perf_counter()
        queries = self.detector.encode(texts)
        timings = {"encode": time.perf_counter() - started}
        result = self.detector.score(queries, texts)
        timings.update(result.timings)
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        now = time.monotonic()
        alerts = [
            self.detector.decide(
                message, assessment, scored_at=scored_at, processing_ms=(now - at) * 1e3
            )
            for message, assessment, at in zip(messages, result.assessments, arrived, strict=True)
        ]
        if self.publisher is not None:
            published = time.perf_counter()
            for alert in alerts:
                self.publisher.offer(alert)
            timings["publish"] = time.perf_counter() - published
        m.messages_scored.inc(len(alerts))
        m.batch_size.observe(len(alerts))
        for name, seconds in timings.items():
            m.stage_duration.labels(name).observe(seconds)
        for alert, at in zip(alerts, arrived, strict=True):
            m.scores.observe(alert.score)
            m.processing_latency.observe(now - at)
            if alert.is_alert and self.publisher is None:  # else counted once acknowledged
                m.alerts_published.labels(alert.category or "none").inc()
        return alerts

    def poll_bank(self) -> None:
        """Apply the bank changes that arrived (the worker does the same between batches).
        A failure is the watch's to report (readyz, metric, log): scoring goes on with
        the bank as it is."""
        if self.bank is None:
            return
        try:
            applied = self.bank.poll()
        except Exception as e:
            if self.watch is not None:
                self.watch.poll_failed(e)
            return
        if self.watch is not None:
            self.watch.poll_failed(None)
        if applied:
            set_index_gauges(self.metrics, self.detector)
            observe_bank_changes(self.metrics, self.bank.last_applied, time.time())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.watch is not None:
            self.watch.close()
        if self.bank is not None:
            self.bank.close()


class DecisionPublisher:
    """--publish: sends decisions to the scores topic (and alerts to the alert topic) from
    a thread of its own, which owns the producer, so that scoring never waits for Kafka.

    offer() only queues a decision's records; at most `capacity` records are pending
    (queued here, or sent and not yet acknowledged or failed). A decision whose records do
    not fit is dropped: answered but not published, counted in
    fraud_serve_publish_dropped_total and logged (the first, then once a minute). This
    bounds memory while the broker is away too: kafka-python's producer has no buffer
    limit of its own."""

    def __init__(
        self,
        producer,
        scores_topic: str,
        alert_topic: str,
        capacity: int,
        metrics: ServeMetrics,
    ) -> None:
        self.producer, self.capacity, self.metrics = producer, capacity, metrics
        self.scores_topic, self.alert_topic = scores_topic, alert_topic
        self.errors = _Throttled("decisions not published: the broker did not acknowledge")
        self.drops = _Throttled(
            f"decisions not published: {capacity} records already waiting for the broker "
            "(FRAUD_SERVE__PUBLISH_QUEUE)"
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._deadline: float | None = None  # set by close(): send nothing after it
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def offer(self, alert: Alert) -> bool:
        """Queue `alert` for publishing (on the scoring thread); False if it was dropped."""
        records = 1 + alert.is_alert
        with self._lock:
            if self._pending + records > self.capacity:
                dropped = True
            else:
                dropped = False
                self._pending += records
                self.metrics.publish_pending.set(self._pending)
        if dropped:
            self.metrics.publish_dropped.inc()
            self.drops.note(f"message {alert.message_id}")
            return False
        category = (alert.category or "none") if alert.is_alert else None
        self._queue.put((alert.to_bytes(), alert.message_id.encode("utf-8"), category))
        return True

    def _done(self, _result=None) -> None:
        with self._lock:
            self._pending -= 1
            self.metrics.publish_pending.set(self._pending)

    def _failed(self, error: BaseException) -> None:
        self.metrics.publish_errors.inc()
        self.errors.note(repr(error))
        self._done()

    def _run(self) -> None:
        """Send each queued decision's records (an alert: the category it is counted
        under once acknowledged; None for a decision that is no alert)."""
        alerts = self.metrics.scoring.alerts_published
        while (item := self._queue.get()) is not None:
            payload, key, category = item
            topics = [self.scores_topic] + [self.alert_topic] * (category is not None)
            for topic in topics:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self.metrics.publish_dropped.inc()  # closing, and out of time
                    self._done()
                    continue
                try:
                    future = self.producer.send(topic, payload, key=key)
                except Exception as e:  # no metadata within max_block_ms, or closed
                    self._failed(e)
                    continue
                future.add_callback(self._done)
                future.add_errback(self._failed)
                if topic == self.alert_topic:
                    future.add_callback(lambda _meta, c=category: alerts.labels(c).inc())

    def close(self, timeout_s: float = 30) -> None:
        """Send what is queued and wait for the acknowledgements, within timeout_s in all
        (what is left then is dropped and counted), then close the producer."""
        self._deadline = time.monotonic() + timeout_s
        self._queue.put(None)
        self._thread.join(timeout_s + PUBLISH_MAX_BLOCK_MS / 1000)
        self.producer.flush(timeout=max(self._deadline - time.monotonic(), 1))
        self.producer.close(timeout=10)


class _Throttled:
    """Counts events and logs the first, then at most one line a minute with the count."""

    def __init__(self, what: str) -> None:
        self.what, self.logged_at, self.since = what, -float("inf"), 0

    def note(self, last: str) -> None:
        self.since += 1
        if time.monotonic() - self.logged_at >= 60:
            log.error("%d %s (last: %s)", self.since, self.what, last)
            self.logged_at, self.since = time.monotonic(), 0


def load_scorer(settings: Settings, metrics: ServeMetrics) -> Scorer:
    """The detector of `settings`, following the bank topic when its index is linked to
    it, and a producer for --publish. Runs on the scoring thread."""
    from workers.kafka.clients import ensure_topics, make_producer
    from workers.state.bank import BankFollower, BankWatch, ensure_bank_topic

    detector = Detector.from_settings(settings)
    kafka = settings.kafka
    bank = publisher = watch = None
    if detector.index.changelog_offsets:
        ensure_bank_topic(kafka)
        bank = BankFollower(kafka, detector.index)
        bank.catch_up()  # every change since the snapshot, before the first answer
        watch = BankWatch(
            kafka, detector.index, bank.partitions, on_check=_BankMetrics(metrics)
        ).start()
    else:
        log.info(
            "index %s is not linked to the bank topic %s (no changelog offsets): not "
            "following it; link it with `fraud index publish` or `fraud index snapshot`",
            settings.index_dir,
            kafka.bank_topic,
        )
    if settings.serve.publish:
        ensure_topics(kafka, [kafka.alert_topic, kafka.scores_topic])
        producer = make_producer(kafka, max_block_ms=PUBLISH_MAX_BLOCK_MS)
        publisher = DecisionPublisher(
            producer, kafka.scores_topic, kafka.alert_topic, settings.serve.publish_queue, metrics
        )
    return Scorer(detector, metrics.scoring, bank=bank, publisher=publisher, watch=watch)


class _BankMetrics:
    """The bank watch's checks as metrics: following (1/0), and the failed checks."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics
        metrics.bank_following.set(1)  # caught up at load

    def __call__(self, state) -> None:
        self.metrics.bank_following.set(int(state.following))
        if not state.following:
            self.metrics.bank_follow_failures.inc()


# -- the batcher ---------------------------------------------------------------------------


@dataclass
class _Pending:
    message: Message
    arrived: float  # time.monotonic()
    future: asyncio.Future


class Batcher:
    """The queue between requests and the scoring thread (see the module's docstring)."""

    def __init__(self, serve: ServeSettings, metrics: ServeMetrics) -> None:
        self.max_batch, self.wait_s, self.max_queue = (
            serve.max_batch,
            serve.batch_wait_ms / 1000,
            serve.max_queue,
        )
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="scorer")
        self.queue: deque[_Pending] = deque()
        self.scorer: Scorer | None = None
        self.error: BaseException | None = None  # why loading failed
        self.stopping = False
        self.last_progress = time.monotonic()
        self._task: asyncio.Task | None = None
        self._loading: asyncio.Future | None = None
        self._wakeup = asyncio.Event()

    @property
    def ready(self) -> bool:
        return (
            self.scorer is not None
            and self._task is not None
            and not self._task.done()
            and not self.stopping
        )

    def stalled(self) -> bool:
        return bool(self.queue) and time.monotonic() - self.last_progress > STALL_S

    async def start(self, load: Callable[[], Scorer]) -> None:
        """Load (on the scoring thread, so the model is used from the thread it was
        loaded on), then score until stop()."""
        loop = asyncio.get_running_loop()
        self._loading = loop.run_in_executor(self.executor, load)
        try:
            scorer = await self._loading
        except Exception as e:
            self.error = e
            raise
        self.scorer = scorer
        if not self.stopping:
            self.last_progress = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="batcher")

    async def submit(self, messages: list[Message]) -> list[Alert]:
        """Queue messages and wait for their decisions, in order."""
        if not self.ready:
            raise _unavailable(
                "the service is stopping"
                if self.stopping
                else "the model and index are still loading: retry shortly (GET /readyz)"
            )
        if len(self.queue) + len(messages) > self.max_queue:
            raise _unavailable(
                f"{len(self.queue)} messages are waiting to be scored (limit "
                f"{self.max_queue}, FRAUD_SERVE__MAX_QUEUE): retry shortly"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = [_Pending(m, now, loop.create_future()) for m in messages]
        self.queue.extend(pending)
        self.metrics.scoring.messages_consumed.inc(len(messages))
        self.metrics.queued.set(len(self.queue))
        self._wakeup.set()
        if len(pending) == 1:
            return [await pending[0].future]
        results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self.stopping:
                    return
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_POLL_S)
                except TimeoutError:
                    await loop.run_in_executor(self.executor, self.scorer.poll_bank)
                    self.last_progress = time.monotonic()
                continue
            await self._fill()
            batch: list[_Pending] = []
            while self.queue and len(batch) < self.max_batch:
                p = self.queue.popleft()
                if not p.future.done():  # a caller that went away is not scored
                    batch.append(p)
            self.metrics.queued.set(len(self.queue))
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self.executor,
                    self.scorer.score,
                    [p.message for p in batch],
                    [p.arrived for p in batch],
                )
            except Exception as e:  # Scorer.score catches what scoring raises: a bug here
                log.error("the scoring thread failed (%s at %s)", type(e).__name__, raised_at(e))
                results = [ScoringFailed.logged(p.message.id, e) for p in batch]
            self.last_progress = time.monotonic()
            for p, alert in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(alert, ScoringFailed):
                    p.future.set_exception(alert)
                else:
                    p.future.set_result(alert)

    async def _fill(self) -> None:
        """Wait for a full batch, at most until batch_wait_ms after the oldest queued
        message arrived: a queue that filled while the scorer was busy waits no more."""
        deadline = self.queue[0].arrived + self.wait_s
        while len(self.queue) < self.max_batch and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def stop(self) -> None:
        """Score what is queued, then close the scorer and its thread."""
        self.stopping = True
        self._wakeup.set()
        if self._loading is not None:
            with suppress(Exception):
                await self._loading
        if self._task is not None:
            await self._task
        if self.scorer is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.scorer.close)
        self.executor.shutdown(wait=False)


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(503, detail=detail, headers={"Retry-After": "1"})


# -- requests and answers ------------------------------------------------------------------


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class ScoringProblem(Problem):
    """A message of the request could not be scored: the service's log says why under
    `error_id` (the message's text is never logged)."""

    error_id: str


async def _scoring_failed(request: Request, exc: ScoringFailed) -> JSONResponse:
    """500 for the one request whose message could not be scored, with its error id."""
    body = ScoringProblem(
        detail=f"message {exc.message_id} could not be scored: the service's log has "
        f"why, under error id {exc.error_id}",
        error_id=exc.error_id,
    )
    return JSONResponse(body.model_dump(), status_code=500)


class ScoreBatchResponse(BaseModel):
    """The decisions for a batch request, in the order of its messages."""

    decisions: list[Alert]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    detail: str
    model: str | None = None
    index_version: str | None = None
    references: int | None = None
    # Which scorer answers and why (fraud/scoring/detector.py, ScorerChoice): a trained head that
    # no longer matches the index is not used, and says so here.
    scorer: str | None = None
    scorer_reason: str | None = None
    scorer_detail: str | None = None
    bank: str | None = Field(
        None,
        description="the reference bank topic: 'following <topic>', or why not and since "
        "when (scoring goes on with the bank as last read); null when the index is not "
        "linked to the bank",
    )


def request_models(serve: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request bodies, with this service's limits in their schema."""

    class ScoreRequest(BaseModel):
        """One message to score. Unknown fields are refused: put them in `metadata`."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

        id: str = Field(
            min_length=1,
            max_length=256,
            description="the message's id: the decision's message_id (and Kafka key)",
        )
        text: str = Field(
            min_length=1,
            max_length=serve.max_text_chars,
            pattern=r"\S",
            description="the message text; not logged, and not copied into the decision",
        )
        recipient: str | None = Field(
            None,
            min_length=1,
            max_length=256,
            description="passed through into the decision (inline scoring does not use "
            "the recipient's history)",
        )
        metadata: dict[str, Any] | None = Field(
            None, description="anything else (sender, channel, ...): passed through"
        )

        @model_validator(mode="after")
        def _is_text(self) -> "ScoreRequest":
            # The worker's rules for a record (fraud/schemas.py): no lone surrogates, no
            # nesting deeper than its limit.
            try:
                check_json_value([self.id, self.text, self.recipient, self.metadata])
            except SchemaError as e:
                raise ValueError(e.detail) from None
            return self

        def message(self) -> Message:
            extra = {k: v for k in ("recipient", "metadata") if (v := getattr(self, k)) is not None}
            return Message(id=self.id, text=self.text, **extra)

    class ScoreBatchRequest(BaseModel):
        """Several messages to score, answered together."""

        model_config = ConfigDict(extra="forbid")

        messages: list[ScoreRequest] = Field(min_length=1, max_length=serve.max_batch_messages)

    return ScoreRequest, ScoreBatchRequest


# -- the HTTP layer ------------------------------------------------------------------------


class Guard:
    """Pure ASGI, around the framework: the bearer token and a JSON content type on
    /v1/*, and the body-size limit (401, 415, 413 before any of the body is parsed),
    plus the request metrics of every route."""

    def __init__(self, app, max_bytes: int, tokens: Sequence[str], metrics: ServeMetrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics
        self.digests = [hashlib.sha256(t.encode("utf-8")).digest() for t in tokens]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        started, status = time.perf_counter(), 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope) if path.startswith("/v1/") else None
            if refusal is not None:
                await _reply(send_and_note, *refusal)
            else:
                await self.app(scope, self._limited(receive), send_and_note)
        finally:
            route = path if path in ROUTES else "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(time.perf_counter() - started)

    def _refusal(self, scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        headers = dict(scope["headers"])
        if self.digests and not self._authorized(headers.get(b"authorization", b"")):
            detail = "a valid bearer token is required (Authorization: Bearer <token>)"
            return 401, detail, [(b"www-authenticate", b'Bearer realm="fraud"')]
        if scope["method"] != "POST":
            return None
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        json_like = media.startswith(b"application/") and media.endswith((b"/json", b"+json"))
        if not json_like:
            shown = media.decode("latin-1")[:100] or "none"
            detail = f"send a JSON body with Content-Type: application/json (got {shown})"
            return 415, detail, []
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return 413, self._too_large(int(length)), []
        return None

    def _authorized(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        digest = hashlib.sha256(credentials.strip()).digest()
        matched = False
        for expected in self.digests:  # every token compared, each in constant time
            matched |= hmac.compare_digest(digest, expected)
        return matched and scheme.lower() == b"bearer"

    def _too_large(self, size: int | None) -> str:
        size_text = f"{size} bytes" if size is not None else "more"
        return (
            f"request body of {size_text}: the limit is {self.max_bytes} bytes "
            "(FRAUD_SERVE__MAX_REQUEST_BYTES)"
        )

    def _limited(self, receive):
        """`receive`, failing with 413 once a body without a Content-Length (chunked)
        passes the limit."""
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=self._too_large(None))
            return message

        return limited


async def _reply(send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + headers})
    await send({"type": "http.response.body", "body": body})


async def _validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 answer, without echoing the input back (a text of 16k characters,
    a whole batch): where and what, per error."""
    errors = []
    for e in exc.errors():
        message = e["msg"]
        if e["type"] == "json_invalid" and "error" in e.get("ctx", {}):
            message = f"{message}: {e['ctx']['error']}"
        errors.append({"loc": list(e["loc"]), "msg": message, "type": e["type"]})
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(
    serve: ServeSettings,
    load: Callable[[], Scorer],
    registry: CollectorRegistry,
    metrics: ServeMetrics,
    tokens: Sequence[str] = (),
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The service. `load` builds the Scorer (on the scoring thread, once the app has
    started: /healthz answers while it loads). `on_fatal(error)`: loading failed."""
    batcher = Batcher(serve, metrics)

    def loaded(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("loading the model and index failed: %s", error)
            if on_fatal is not None:
                on_fatal(error)
            return
        if batcher.scorer is not None:
            metrics.ready.set(1)
            index = batcher.scorer.detector.index
            log.info("ready: index version %s, %d references", index.version, len(index))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(batcher.start(load), name="load")
        loading.add_done_callback(loaded)
        try:
            yield
        finally:
            metrics.ready.set(0)
            await batcher.stop()

    app = FastAPI(
        title="fraud-stream inline scoring",
        version="1",
        summary="The scoring worker's decision for a message, answered over HTTP.",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(Guard, max_bytes=serve.max_request_bytes, tokens=tokens, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(ScoringFailed, _scoring_failed)
    ScoreRequest, ScoreBatchRequest = request_models(serve)
    security = [Security(HTTPBearer(auto_error=False))] if tokens else []
    refused: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem, "description": "the body is not UTF-8 JSON"},
        413: {"model": Problem, "description": "the body is larger than the limit"},
        415: {"model": Problem, "description": "the body is not JSON"},
        500: {"model": ScoringProblem, "description": "a message could not be scored"},
        503: {"model": Problem, "description": "loading, stopping, or the queue is full"},
    }
    if tokens:
        refused[401] = {"model": Problem, "description": "no valid bearer token"}

    async def decide(messages: list[Message]) -> list[Alert]:
        return await batcher.submit(messages)  # ScoringFailed: 500 (_scoring_failed)

    @app.post(
        "/v1/score",
        response_model=Alert,
        responses=refused,
        dependencies=security,
        summary="Score one message",
        description="The decision the scoring worker would publish for this message.",
    )
    async def score(message: ScoreRequest) -> Response:
        (alert,) = await decide([message.message()])
        return Response(alert.to_bytes(), media_type="application/json")

    @app.post(
        "/v1/score:batch",
        response_model=ScoreBatchResponse,
        responses=refused,
        dependencies=security,
        summary="Score several messages",
        description="One decision per message, in the order of the request's messages.",
    )
    async def score_batch(batch: ScoreBatchRequest) -> Response:
        alerts = await decide([m.message() for m in batch.messages])
        body = b'{"decisions":[' + b",".join(a.to_bytes() for a in alerts) + b"]}"
        return Response(body, media_type="application/json")

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Problem, "description": "the scoring thread is stuck"}},
        summary="Liveness",
    )
    async def healthz() -> Health:
        if batcher.stalled():
            raise HTTPException(503, detail=f"no batch scored for over {STALL_S:.0f} s")
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready"}},
        summary="Readiness: the model and index are loaded",
    )
    async def readyz() -> JSONResponse:
        if batcher.ready:
            detector = batcher.scorer.detector
            detail, bank = "ready", None
            if batcher.scorer.watch is not None:
                state = batcher.scorer.watch.state()
                bank = state.detail
                if not state.following:
                    since = time.monotonic() - state.since
                    bank = f"not following for {since:.0f} s: {state.detail}"
                    detail = "ready, with the bank as last read: " + bank
            body = Readiness(
                ready=True,
                detail=detail,
                model=detector.model,
                index_version=detector.index.version,
                references=len(detector.index),
                bank=bank,
                scorer=detector.choice.scorer,
                scorer_reason=detector.choice.reason,
                scorer_detail=detector.choice.detail,
            )
        elif batcher.error is not None:
            body = Readiness(ready=False, detail=f"loading failed: {batcher.error}")
        else:
            body = Readiness(ready=False, detail="stopping" if batcher.stopping else "loading")
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    async def metrics_page() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


# -- the process ---------------------------------------------------------------------------


def load_tokens(serve: ServeSettings) -> list[str]:
    """The bearer tokens: FRAUD_SERVE__TOKEN (empty: none, as compose passes an unset
    variable) and the lines of the token file (blank lines and # comments skipped). No
    token: the service is open (on its bound address)."""
    token = serve.token.get_secret_value() if serve.token is not None else ""
    tokens = [token] if token else []
    if serve.token_file is not None:
        try:
            lines = serve.token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"token file {serve.token_file}: cannot be read ({e}): fix "
                "FRAUD_SERVE__TOKEN_FILE / --token-file"
            ) from None
        found = [t for line in lines if (t := line.strip()) and not t.startswith("#")]
        if not found:
            raise ConfigError(f"token file {serve.token_file} holds no token (one a line)")
        tokens += found
    if any(t != t.strip() or not t for t in tokens):
        raise ConfigError("a bearer token is empty or has spaces around it")
    return tokens


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): choose another "
            "--host/--port (FRAUD_SERVE__HOST, FRAUD_SERVE__PORT)"
        ) from None
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end the process with status 0 once the
        shutdown is done, as the worker does (uvicorn raises the signal again after it)."""

        @contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def run_serve(settings: Settings) -> None:
    """The `fraud serve` process: bind, load the model on the scoring thread while
    /healthz already answers, serve until SIGTERM/SIGINT (requests in flight finish)."""
    import uvicorn

    serve = settings.serve
    tokens = load_tokens(serve)
    log.info("settings %s", settings.model_dump_json())  # tokens are SecretStr: masked
    sock = bind(serve.host, serve.port)
    registry = CollectorRegistry()
    metrics = build_serve_metrics(registry)
    failures: list[BaseException] = []

    def on_fatal(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(
        serve, lambda: load_scorer(settings, metrics), registry, metrics, tokens, on_fatal
    )
    config = uvicorn.Config(
        app,
        log_config=None,  # the process's logging (workers.cli.main)
        access_log=False,  # paths and codes are metrics; nothing about a request is logged
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    server = _server_class()(config)
    host, port = sock.getsockname()[:2]
    log.info(
        "serving on http://%s:%d (OpenAPI: /docs), %s",
        host,
        port,
        f"{len(tokens)} bearer token(s) required" if tokens else "no token required",
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failures:
        raise failures[0]
    log.info("service stopped")
