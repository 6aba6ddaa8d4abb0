"""Processes: the project's commands started as children (workers, services: the demo,
the benchmarks and the tests all start them here), stopped, and a free port for them; and
how a long-running process stops on a signal."""

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO

from fraud.config import Settings, to_env

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
