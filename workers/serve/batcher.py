"""The queue between `fraud serve`'s requests and its one scoring thread.

Requests put their messages on one queue. The batcher task takes up to max_batch of
them, waiting at most batch_wait_ms after the oldest one arrived (so only when the scorer
was idle), and hands them to the scoring thread: the model runs outside the event loop,
which keeps answering. Bank changes are applied on that same thread (the index is not
thread-safe): before every batch, and every second or so while idle.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass

from fastapi import HTTPException

from fraud.config import ServeSettings
from fraud.errors import ScoringError
from fraud.metrics import ServeMetrics
from fraud.schemas import Decision, Message
from fraud.scoring.isolation import raised_at
from workers.serve.scorer import InlineScorer, scoring_failed

log = logging.getLogger(__name__)

# Bank changes are applied at least this often without traffic.
IDLE_POLL_S = 1.0
# A scoring thread with work queued and no batch finished for this long is stuck.
STALL_S = 60.0


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
        self.scorer: InlineScorer | None = None
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

    async def start(self, load: Callable[[], InlineScorer]) -> None:
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

    async def submit(self, messages: list[Message]) -> list[Decision]:
        """Queue messages and wait for their decisions, in order."""
        if not self.ready:
            raise unavailable(
                "the service is stopping"
                if self.stopping
                else "the model and index are still loading: retry shortly (GET /readyz)"
            )
        if len(self.queue) + len(messages) > self.max_queue:
            raise unavailable(
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
            except Exception as e:  # InlineScorer.score catches what scoring raises: a bug
                log.error("the scoring thread failed (%s at %s)", type(e).__name__, raised_at(e))
                results = [scoring_failed(p.message.id, e) for p in batch]
            self.last_progress = time.monotonic()
            for p, alert in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(alert, ScoringError):
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


def unavailable(detail: str) -> HTTPException:
    return HTTPException(503, detail=detail, headers={"Retry-After": "1"})
