import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud.errors import ConfigError
from workers.broker import LocalBroker

pytestmark = pytest.mark.integration


def test_a_second_broker_starts_answers_and_leaves_nothing_behind():
    from kafka import KafkaAdminClient

    broker = LocalBroker()
    broker.start()
    pid, data_dir = broker._proc.pid, broker.data_dir
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        assert admin.describe_cluster()["brokers"]
        admin.close()
    finally:
        broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the JVM is gone, not a zombie nor a stray
    assert not data_dir.exists()


def test_missing_jars_say_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="make kafka-jars"):
        LocalBroker(lib_dir=tmp_path).start()


def test_cluster_ids_never_look_like_an_option():
    from workers.broker import cluster_id

    ids = [cluster_id() for _ in range(2000)]  # about 1 in 64 random ids starts with '-'
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether `pid` exits (or is only a zombie) within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def _only_child(pid: int, timeout_s: float = 10) -> int:
    deadline = time.monotonic() + timeout_s
    while not (children := _children(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(children) == 1, children
    return children[0]


HOLDER = """
import sys, time
from workers.broker import LocalBroker
broker = LocalBroker()
broker.start()
print(broker._proc.pid, broker.data_dir, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_broker_dies_with_a_parent_killed_by_sigkill():
    """A killed pytest: the process holding a LocalBroker gets SIGKILL, no cleanup runs."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        pid, data_dir = holder.stdout.readline().split()
        holder.kill()
        holder.wait()
        assert _gone(int(pid), timeout_s=10), "the broker's JVM outlived its parent"
    finally:
        if holder.poll() is None:
            holder.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_make_broker_prints_one_line_and_stops_when_make_is_killed():
    """`make broker` runs `python -m workers.broker` as make's child; killing make with
    SIGKILL passes no signal on, so the broker's process must notice by itself."""
    make = subprocess.Popen(  # stands in for make: a parent that runs the command
        [sys.executable, "-c", "import subprocess, sys; subprocess.call(sys.argv[1:])",
         sys.executable, "-m", "workers.broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        first = make.stdout.readline()
        assert re.fullmatch(r"KAFKA_BOOTSTRAP_SERVERS=127\.0\.0\.1:\d+\n", first), first
        command = _only_child(make.pid)
        java = _only_child(command)
        make.kill()
        make.wait()
        assert _gone(command, timeout_s=60) and _gone(java, timeout_s=5)
        rest = make.stdout.read()  # all written: the command has exited
    finally:
        if make.poll() is None:
            make.kill()
    # Nothing between the address and the stop: no INFO lines of the Kafka client.
    assert rest == "stopping broker\n", rest
