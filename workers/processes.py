"""Child processes of the project's commands and tests (workers, services)."""

import subprocess


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
