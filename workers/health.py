"""The worker's small HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for
orchestrators.

/healthz is for a liveness probe (restart the process when it fails), /readyz for
readiness and alerting: a worker waiting on a broker that went away is alive (a restart
would not bring the broker back) but not ready, and /readyz says why in its JSON body."""

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    healthy: Callable[[], bool],
    readiness: Callable[[], dict] | None = None,
) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; `server.server_port` is the bound port (port 0: any).

    readiness: what /readyz answers, as JSON: a dict with "ready" (200 when true, else 503)
    and details (the worker's: which scorer it uses and why, the index version).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            elif path == "/readyz" and readiness is not None:
                body = readiness()
                status = 200 if body.get("ready") else 503
                self._reply(status, json.dumps(body).encode() + b"\n", "application/json")
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes every few seconds: stay quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
