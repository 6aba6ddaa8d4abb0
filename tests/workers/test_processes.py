"""Child processes (workers/processes.py): the one spawner, a free port, and a stop on
SIGTERM/SIGINT with a second Ctrl-C that interrupts."""

import json
import socket
import subprocess
import sys

from fraud.config import Settings
from workers.processes import free_port, start_fraud_process

# Stands in for the `fraud` command: prints its arguments and its FRAUD_* variables.
SHOW = (
    "-c",
    "import json, os, sys; print(json.dumps([sys.argv[1:], "
    "{k: v for k, v in os.environ.items() if k.startswith('FRAUD_')}]))",
)


def test_a_child_gets_the_subcommand_and_exactly_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAUD_METRICS_PORT", "9999")  # this shell's, not the child's
    settings = Settings().model_copy(update={"index_dir": tmp_path, "metrics_port": 0})
    proc = start_fraud_process(("worker", "-v"), settings, subprocess.PIPE, command=SHOW)
    out, _ = proc.communicate(timeout=30)
    argv, env = json.loads(out)
    assert argv == ["worker", "-v"]
    assert env["FRAUD_INDEX_DIR"] == str(tmp_path)
    assert env["FRAUD_METRICS_PORT"] == "0"  # the settings', over this process's variable


def test_a_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


STOPPER = """
import os, signal, sys, time
from workers.processes import stop_on_signals
stopped = []
stop_on_signals(lambda: stopped.append(1))
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.1)
print(len(stopped), flush=True)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_sigterm_and_sigint_stop_and_a_second_ctrl_c_interrupts():
    out = subprocess.run(
        [sys.executable, "-c", STOPPER], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert out == ["2", "interrupted"]
