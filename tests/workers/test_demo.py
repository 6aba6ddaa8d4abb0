"""`fraud demo` on the test-suite's broker, start to finish: what the README's tour shows.

The demo builds the default detector (cached after the first build), starts `fraud
worker` as its own process (through workers/processes.py, the one spawner), replays the
demo messages and two malformed records, prints each alert with its evidence
(fraud.scoring.format_assessment) and a summary, and stops the worker.
"""

import json

import pytest

from fraud.data import demo_messages_path
from workers.cli.main import main
from workers.producer import read_messages

pytestmark = [pytest.mark.integration, pytest.mark.model]


def test_the_demo_decides_every_message_and_stops_its_worker(kafka_bootstrap, capfd):
    assert main(["demo", "--bootstrap-servers", kafka_bootstrap, "--rate", "0"]) == 0
    out, err = capfd.readouterr()
    messages = read_messages(demo_messages_path())
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["scored"] == len(messages)
    assert summary["frauds"] == sum(m.get("expected") == "fraud" for m in messages)
    # The default detector (seed set + UCI, its shipped head): at most one demo fraud missed
    # and two false alerts (docs/usage.md shows the summary and says why two), and its
    # dev-set line.
    assert summary["caught"] >= summary["frauds"] - 1 and summary["false_alerts"] <= 2
    assert "learned attention head" in out and "dev set         false alerts" in out
    assert "dead letters    2 (" in out  # both malformed records, each with its reason
    assert "ALERT  score" in out and "evidence #" in out  # an alert, with what it cites
    assert "worker          stopped with exit code 0 after SIGTERM" in out
    # The worker's log goes to stderr, beside the demo's output rather than inside it.
    assert "worker stopped" in err and "worker stopped" not in out
