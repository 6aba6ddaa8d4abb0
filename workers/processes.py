"""Processes: the project's commands started as children (workers, services: the demo,
the benchmarks and the tests all start them here), stopped, and a free port for them; how
a long-running process stops on a signal; and the listening socket and web server of the
processes that serve HTTP (`fraud serve`, `fraud console`)."""

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import IO

from fraud.config import Settings, to_env
from fraud.errors import ConfigError

# The Python arguments that run the `fraud` command (what the console script runs).
FRAUD_COMMAND = ("-m", "workers.cli.main")


def start_fraud_process(
    subcommand: str | Sequence[str],
    settings: Settings,
    log: IO | int | None,
    command: Sequence[str] = FRAUD_COMMAND,
) -> subprocess.Popen:
    """`fraud <subcommand>` (a name and its flags: "worker", ("worker", "--publish-scores"))
    as a child process whose settings are exactly `settings`: they go as FRAUD_* variables,
    and this process's own FRAUD_* variables are not passed on. Its output and errors go
    to `log` (a file, subprocess.PIPE, or None: this process's own). `command`: the Python
    arguments that start the `fraud` command instead (a test's wrapper module, which passes
    the subcommand on)."""
    argv = [subcommand] if isinstance(subcommand, str) else list(subcommand)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.Popen(
        [sys.executable, *command, *argv],
        env={**env, **to_env(settings)},
        stdout=log,
        stderr=None if log is None else subprocess.STDOUT,
    )


def stop_process(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (the worker finishes its batches and commits), SIGKILL if it is not gone
    within timeout_s; returns once the process has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop()`: the process finishes what it holds (a worker its
    batches and their commit) and leaves. The first SIGINT also puts Python's default
    handler back, so a second Ctrl-C interrupts at once (quix-streams' Application does
    the same). Signal handlers can only be set from the main thread: elsewhere (a test
    running a process's main on a thread) this does nothing."""
    if threading.current_thread() is threading.main_thread():

        def on_sigint(*_) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            stop()

        signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGTERM, lambda *_: stop())


def bind(host: str, port: int, flags: str = "--host/--port") -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear error (`flags`:
    the options and variables that choose another)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): choose another {flags}"
        ) from None
    return sock


def web_server():
    """uvicorn's Server class, but SIGTERM/SIGINT end the process with status 0 once the
    shutdown is done, as the worker does (uvicorn raises the signal again after it). A
    second SIGINT forces the exit (uvicorn's own handle_exit)."""
    import uvicorn  # lazily: only the processes that serve HTTP need it

    class Server(uvicorn.Server):
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
