"""`fraud bench-serve`: `fraud serve` under load, from a second process on loopback.

The service runs as its own `fraud serve` process; this process is the load generator.
Two parts, each a bounded number of requests:

- saturation: `concurrency` connections, each sending POST /v1/score back to back
  (closed loop), until n_saturation answers: messages per second;
- latency at half of it: requests sent at a fixed rate (open loop: one every 1/rate
  seconds, whether or not earlier ones were answered, on as many connections as that
  takes), p50 and p99 from each request's scheduled send time to its answer, so a
  stalled server shows in the figures instead of slowing the generator down.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams, not a general
one: on a 2-core machine the load generator's own CPU time is taken from the server,
and this one costs a small fraction of what a full-featured client does per request.
The server's CPU time and memory come from /proc (Linux): its RSS once ready (model and
index loaded), after its first request, and at peak, as the worker's in end_to_end.py.

`fraud bench` runs this as its "serve" part, `fraud bench-serve` alone
(workers/bench/commands.py: serve_part).
"""

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from fraud.config import Settings
from workers.bench.end_to_end import cpu_seconds, rss_mib, write_log_tail
from workers.bench.timing import RepeatTimer, percentiles_ms
from workers.processes import free_port, start_fraud_process, stop_process

READY_TIMEOUT_S = 300.0
PHASE_TIMEOUT_S = 600.0


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: a request, then its answer, in turn."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send a request and read its answer. A kept-alive connection that the server
        closed while it was idle (uvicorn does after 5 s) is reopened and the request sent
        again, once: the service's requests are idempotent."""
        reused = self.writer is not None
        try:
            return await self._exchange(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        return await self._exchange(method, path, body)

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, keep_alive = 0, True
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        answer = await self.reader.readexactly(length)
        if not keep_alive:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _body(message_id: str, text: str) -> bytes:
    return json.dumps({"id": message_id, "text": text}).encode("utf-8")


async def _wait_ready(host: str, port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fraud serve exited with code {proc.returncode}")
        connection = HttpConnection(host, port)
        try:
            status, _ = await connection.request("GET", "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"fraud serve was not ready within {READY_TIMEOUT_S:.0f} s")


async def _check(connection: HttpConnection, message_id: str, text: str) -> None:
    status, answer = await connection.request("POST", "/v1/score", _body(message_id, text))
    if status != 200 or f'"message_id":"{message_id}"'.encode() not in answer:
        raise RuntimeError(f"{message_id}: HTTP {status}: {answer[:200]!r}")


async def _closed_loop(
    host: str, port: int, texts: Sequence[str], concurrency: int
) -> tuple[float, int]:
    """Send every text, `concurrency` at a time back to back; the seconds it took and the
    requests answered (200, with their own id)."""
    queue = iter(enumerate(texts))
    answered = 0

    async def client() -> None:
        nonlocal answered
        connection = HttpConnection(host, port)
        try:
            for n, text in queue:
                await _check(connection, f"sat-{n}", text)
                answered += 1
        finally:
            connection.close()

    timer = RepeatTimer()
    for _ in timer:
        clients = asyncio.gather(*(client() for _ in range(concurrency)))
        await asyncio.wait_for(clients, PHASE_TIMEOUT_S)
    return timer.median_s(), answered


async def _open_loop(host: str, port: int, texts: Sequence[str], rate: float) -> np.ndarray:
    """Send the texts at `rate` per second; each one's ms from its scheduled time to its
    answer."""
    idle: list[HttpConnection] = []
    opened: list[HttpConnection] = []
    latency_ms = np.zeros(len(texts))

    async def one(n: int, text: str, scheduled: float) -> None:
        connection = idle.pop() if idle else HttpConnection(host, port)
        if connection not in opened:
            opened.append(connection)
        await _check(connection, f"half-{n}", text)
        latency_ms[n] = (time.perf_counter() - scheduled) * 1000
        idle.append(connection)

    tasks = []
    start = time.perf_counter()
    for n, text in enumerate(texts):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, text, scheduled)))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), PHASE_TIMEOUT_S)
    finally:
        for connection in opened:
            connection.close()
    return latency_ms


def serve_bench(
    settings: Settings,
    texts: Sequence[str],
    n_saturation: int = 1500,
    n_latency: int = 1000,
    concurrency: int = 64,
) -> dict:
    """Start `fraud serve` on settings' index and a free loopback port, then measure."""
    host = "127.0.0.1"
    port = free_port(host)
    serve = settings.serve.model_copy(update={"host": host, "port": port})
    run_settings = settings.model_copy(update={"serve": serve})
    rng = np.random.default_rng(0)
    pick = lambda n: [texts[i] for i in rng.choice(len(texts), n)]  # noqa: E731
    with tempfile.TemporaryFile("w+") as log:
        proc = start_fraud_process("serve", run_settings, log)
        try:
            report = asyncio.run(
                _measure(host, port, proc, pick, n_saturation, n_latency, concurrency)
            )
        except BaseException:
            write_log_tail(log)
            raise
        finally:
            stop_process(proc)  # SIGTERM: requests in flight finish, then it exits
    report["service"] = {"max_batch": serve.max_batch, "batch_wait_ms": serve.batch_wait_ms}
    report["server_exit_code"] = proc.returncode
    return report


async def _measure(host, port, proc, pick, n_saturation, n_latency, concurrency) -> dict:
    await _wait_ready(host, port, proc)
    rss_start = rss_mib([proc.pid])  # model and index loaded (/readyz)
    connection = HttpConnection(host, port)
    try:
        await _check(connection, "first", pick(1)[0])
    finally:
        connection.close()
    rss_first = rss_mib([proc.pid])
    await _closed_loop(host, port, pick(2 * concurrency), concurrency)  # warm-up

    cpu0, own0, load0 = cpu_seconds(proc.pid), time.process_time(), os.getloadavg()[0]
    seconds, answered = await _closed_loop(host, port, pick(n_saturation), concurrency)
    cpu1, own1 = cpu_seconds(proc.pid), time.process_time()
    saturation = n_saturation / seconds

    rate = saturation / 2
    latency_ms = await _open_loop(host, port, pick(n_latency), rate)
    return {
        "saturation_messages_per_s": round(saturation, 1),
        "latency_at_half_saturation": {
            "rate_per_s": round(rate, 1),
            **percentiles_ms(latency_ms),
            "max_ms": round(float(latency_ms.max()), 1),
        },
        "server_cpu_cores_at_saturation": round((cpu1 - cpu0) / seconds, 2),
        "load_generator_cpu_cores_at_saturation": round((own1 - own0) / seconds, 3),
        "server_peak_rss_mib": rss_mib([proc.pid], "VmHWM"),
        "server_rss_mib_at_start": rss_start,
        "server_rss_mib_after_first_request": rss_first,
        "load_average_1m_before": round(load0, 2),
        "requests": {"saturation": n_saturation, "latency": n_latency},
        # Every request is checked (HTTP 200, its own id; else the run fails): answered
        # counts them, so a report shows that none went missing.
        "answered": {"saturation": answered, "latency": int(np.count_nonzero(latency_ms))},
        "concurrency": concurrency,
    }
