"""The `fraud serve` process: bind, load the model on the scoring thread while /healthz
already answers, serve until SIGTERM/SIGINT (requests in flight finish)."""

import logging
from contextlib import ExitStack

from prometheus_client import CollectorRegistry

from fraud.config import Settings
from fraud.metrics import build_serve_metrics
from workers.processes import bind, web_server
from workers.serve.app import create_app
from workers.serve.guard import load_tokens
from workers.serve.scorer import load_scorer

log = logging.getLogger(__name__)


def run_serve(settings: Settings) -> None:
    """The `fraud serve` process. One ExitStack owns what it opens: the listening socket
    here; the model, the bank follower and the producer are the app's (its lifespan)."""
    import uvicorn  # lazily: the web server is needed only by `fraud serve`

    serve = settings.serve
    tokens = load_tokens(serve)
    log.info("settings %s", settings.model_dump_json())  # tokens are SecretStr: masked
    with ExitStack() as stack:
        sock = bind(serve.host, serve.port, "--host/--port (FRAUD_SERVE__HOST, FRAUD_SERVE__PORT)")
        stack.callback(sock.close)
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
        server = web_server()(config)
        host, port = sock.getsockname()[:2]
        log.info(
            "serving on http://%s:%d (OpenAPI: /docs), %s",
            host,
            port,
            f"{len(tokens)} bearer token(s) required" if tokens else "no token required",
        )
        server.run(sockets=[sock])
    if failures:
        raise failures[0]
    log.info("service stopped")
