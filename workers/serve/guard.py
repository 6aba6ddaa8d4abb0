"""`fraud serve`'s guard, around the framework: bearer tokens, content type and body
limits, answered before any of the body is parsed; and 422 answers that do not echo the
input back. Safe by default: no token means an open service on its bound address
(127.0.0.1 unless told otherwise)."""

import hashlib
import hmac
import json
import time
from collections.abc import Sequence

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fraud.config import ServeSettings
from fraud.errors import ConfigError
from fraud.metrics import ServeMetrics

# The routes, as the `route` label of the HTTP metrics (any other path: "other").
ROUTES = frozenset(
    {"/v1/score", "/v1/score:batch", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
)


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


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 answer, without echoing the input back (a text of 16k characters,
    a whole batch): where and what, per error."""
    errors = []
    for e in exc.errors():
        message = e["msg"]
        if e["type"] == "json_invalid" and "error" in e.get("ctx", {}):
            message = f"{message}: {e['ctx']['error']}"
        errors.append({"loc": list(e["loc"]), "msg": message, "type": e["type"]})
    return JSONResponse({"detail": errors}, status_code=422)


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
