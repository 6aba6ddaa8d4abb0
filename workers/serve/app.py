"""`fraud serve`: inline scoring over HTTP, a decision before a message is delivered.

The decision is the one the worker publishes (fraud/schemas.py `Decision`, built by
`Detector.decide` from `Detector.score`: the same scoring path), answered to the
caller; with `--publish` it is also written to the scores topic, and to the alert topic
when it is an alert, keyed by message id as the worker does (publish_decisions).

The package, in FastAPI's "Bigger Applications" layout: this module builds the app (its
lifespan loads the model and runs the batcher; it includes the routers); routes.py has
the routes, models.py the request and answer models, guard.py the tokens and limits,
batcher.py the queue to the one scoring thread, scorer.py what that thread does,
publisher.py the publishing thread, main.py the process.

Changes to the reference bank (when the index is linked to the bank topic, as for the
worker: workers/state/bank.py) are applied on the scoring thread. Whether the service
keeps up with the bank is checked from another thread (BankWatch): when it does not (the
broker away, the topic deleted), it goes on scoring with the bank as last read, and says
so: /readyz's `bank` and detail, `fraud_bank_following` 0, one error line.

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
until it is found (fraud/scoring/isolation.py), its batchmates get their decisions, and
its request gets 500 with an error id, which the log line about it carries.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry

from fraud.config import ServeSettings
from fraud.errors import ScoringError
from fraud.metrics import ServeMetrics
from workers.serve import routes
from workers.serve.batcher import Batcher
from workers.serve.guard import Guard, validation_failed
from workers.serve.scorer import InlineScorer

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Each answer is the decision the Kafka scoring worker publishes for the same message "
    "(schema_version 2): score, is_alert at the configured threshold, category and its "
    "distribution, evidence, model and index version. Inline scoring uses the reference "
    "bank only, not the recipient's history."
)


def create_app(
    serve: ServeSettings,
    load: Callable[[], InlineScorer],
    registry: CollectorRegistry,
    metrics: ServeMetrics,
    tokens: Sequence[str] = (),
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The service. `load` builds the InlineScorer (on the scoring thread, once the app
    has started: /healthz answers while it loads). `on_fatal(error)`: loading failed."""
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
    app.state.batcher, app.state.registry = batcher, registry
    app.add_middleware(Guard, max_bytes=serve.max_request_bytes, tokens=tokens, metrics=metrics)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(ScoringError, routes.scoring_failed)
    app.include_router(routes.scoring_router(serve, secured=bool(tokens)))
    app.include_router(routes.router)
    return app
