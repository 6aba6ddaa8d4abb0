"""Child processes of the project's commands and tests (workers, services)."""

import os
import subprocess
import sys
from collections.abc import Sequence

from fraud.config import Settings, to_env


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


def start_worker(
    settings: Settings, log, command: Sequence[str] = ("-m", "workers.cli.main", "worker")
) -> subprocess.Popen:
    """A `fraud worker` process with `settings` (as FRAUD_* variables), its output to the
    file `log`. `command`: the Python arguments that start it (a test's wrapper module)."""
    return subprocess.Popen(
        [sys.executable, *command],
        env={**os.environ, **to_env(settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
