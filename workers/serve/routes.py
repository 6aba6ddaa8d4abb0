"""`fraud serve`'s routes (FastAPI's APIRouter, included by app.py's create_app).

    POST /v1/score         one message {id, text, recipient?, metadata?} -> its decision
    POST /v1/score:batch   {"messages": [...]} -> {"decisions": [...]}, in request order
    GET  /healthz          200 while the process answers and its scoring thread moves
    GET  /readyz           200 once the model and index are loaded, else 503
    GET  /metrics          Prometheus: the worker's metric names, plus fraud_http_* and
                           fraud_serve_*; scraped as its own job (fraud-serve)

The routes find the batcher and the metrics registry on `request.app.state`. The scoring
routes are built per service (scoring_router): their request bodies carry the service's
limits, which its OpenAPI schema shows.
"""

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraud.config import ServeSettings
from fraud.errors import ScoringError
from fraud.schemas import Decision, Message
from workers.serve.batcher import STALL_S, Batcher
from workers.serve.models import (
    Health,
    Problem,
    Readiness,
    ScoreBatchResponse,
    ScoringProblem,
    request_models,
)


def _batcher(request: Request) -> Batcher:
    return request.app.state.batcher


def scoring_router(serve: ServeSettings, secured: bool) -> APIRouter:
    """POST /v1/score and /v1/score:batch, with `serve`'s limits in their request bodies
    and, when `secured`, a bearer token in their OpenAPI schema (the Guard checks it)."""
    ScoreRequest, ScoreBatchRequest = request_models(serve)
    refused: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem, "description": "the body is not UTF-8 JSON"},
        413: {"model": Problem, "description": "the body is larger than the limit"},
        415: {"model": Problem, "description": "the body is not JSON"},
        500: {"model": ScoringProblem, "description": "a message could not be scored"},
        503: {"model": Problem, "description": "loading, stopping, or the queue is full"},
    }
    if secured:
        refused[401] = {"model": Problem, "description": "no valid bearer token"}
    security = [Security(HTTPBearer(auto_error=False))] if secured else []
    router = APIRouter(prefix="/v1", responses=refused, dependencies=security)

    async def decide(request: Request, messages: list[Message]) -> list[Decision]:
        return await _batcher(request).submit(messages)  # ScoringError: 500 (scoring_failed)

    @router.post(
        "/score",
        response_model=Decision,
        summary="Score one message",
        description="The decision the scoring worker would publish for this message.",
    )
    async def score(message: ScoreRequest, request: Request) -> Response:
        (alert,) = await decide(request, [message.message()])
        return Response(alert.to_bytes(), media_type="application/json")

    @router.post(
        "/score:batch",
        response_model=ScoreBatchResponse,
        summary="Score several messages",
        description="One decision per message, in the order of the request's messages.",
    )
    async def score_batch(batch: ScoreBatchRequest, request: Request) -> Response:
        alerts = await decide(request, [m.message() for m in batch.messages])
        body = b'{"decisions":[' + b",".join(a.to_bytes() for a in alerts) + b"]}"
        return Response(body, media_type="application/json")

    return router


async def scoring_failed(request: Request, exc: ScoringError) -> JSONResponse:
    """500 for the one request whose message could not be scored, with its error id."""
    body = ScoringProblem(
        detail=f"message {exc.message_id} could not be scored: the service's log has "
        f"why, under error id {exc.error_id}",
        error_id=exc.error_id,
    )
    return JSONResponse(body.model_dump(), status_code=500)


router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Problem, "description": "the scoring thread is stuck"}},
    summary="Liveness",
)
async def healthz(request: Request) -> Health:
    if _batcher(request).stalled():
        raise HTTPException(503, detail=f"no batch scored for over {STALL_S:.0f} s")
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready"}},
    summary="Readiness: the model and index are loaded",
)
async def readyz(request: Request) -> JSONResponse:
    batcher = _batcher(request)
    if batcher.ready:
        body = _ready(batcher)
    elif batcher.error is not None:
        body = Readiness(ready=False, detail=f"loading failed: {batcher.error}")
    else:
        body = Readiness(ready=False, detail="stopping" if batcher.stopping else "loading")
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


def _ready(batcher: Batcher) -> Readiness:
    """Ready: which model, index and scorer answer, and whether the bank is followed."""
    detector = batcher.scorer.detector
    detail, bank = "ready", None
    if batcher.scorer.watch is not None:
        state = batcher.scorer.watch.state()
        bank = state.detail
        if not state.following:
            since = time.monotonic() - state.since
            bank = f"not following for {since:.0f} s: {state.detail}"
            detail = "ready, with the bank as last read: " + bank
    return Readiness(
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


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics_page(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
