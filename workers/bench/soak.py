"""`fraud soak`: a long stream at a steady rate through one `fraud worker` process (issue 8,
load; issue 17, bounded memory). Every few seconds it samples the worker's resident memory,
the consumer group's lag (the input topic's end offsets minus the group's committed
offsets) and the recipient history's size (entries, recipients and bytes by its own
accounting, from the worker's /metrics); at the end it waits for every decision and for
the lag to return to zero, and counts the worker's warnings and errors.

The history is made to fill early and then churn: each message goes to one of
`recipients` recipients drawn at random, every message becomes a history entry
(min_score 0), and the history's cap is small (`history_max_bytes`), so it reaches its
cap within the first minute and evicts from then on. Memory is flat when the worker's
RSS after the first minute stays within 10% (`rss_spread_after_1min_pct`): a benchmark,
not a test, minutes long.
"""

import os
import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.config import Settings
from workers.bench.end_to_end import ScoreReader, proc_status_bytes, run_settings, send_messages
from workers.kafka import make_consumer
from workers.processes import free_port, start_fraud_process, stop_process

# RSS after the first minute may vary this much (max over min, in %) and still be flat.
FLAT_PCT = 10.0
WARM_S = 60.0
HISTORY_GAUGES = {
    "history_entries": "fraud_history_entries",
    "history_recipients": "fraud_history_recipients",
    "history_bytes": "fraud_history_memory_bytes",
}


class LagProbe:
    """The group's lag on the input topic, read as an operator's tool would: the group's
    committed offsets (without joining it) against the partitions' end offsets."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self.consumer: KafkaConsumer = make_consumer(kafka)  # never subscribes: no member
        partitions = self.consumer.partitions_for_topic(kafka.input_topic) or {0}
        self.partitions = [TopicPartition(kafka.input_topic, p) for p in sorted(partitions)]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.partitions)
        return sum(ends[tp] - (self.consumer.committed(tp) or 0) for tp in self.partitions)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def history_gauges(metrics_url: str) -> dict[str, int]:
    """The worker's history gauges, read from its /metrics page."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:  # noqa: S310 (loopback)
        page = r.read().decode()
    found = {}
    for key, name in HISTORY_GAUGES.items():
        match = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
        found[key] = int(float(match.group(1))) if match else 0
    return found


def soak_settings(settings: Settings, history_max_bytes: int) -> Settings:
    """The worker's settings: every message a history entry, the history capped at
    `history_max_bytes`, metrics on a free port of our choosing (to read the gauges)."""
    history = settings.history.model_copy(
        update={"enabled": True, "min_score": 0.0, "max_memory_bytes": history_max_bytes}
    )
    worker = run_settings(settings, "soak")
    return worker.model_copy(update={"history": history, "metrics_port": free_port()})


def flat_after_warm_up(samples: list[dict]) -> float | None:
    """RSS spread after the first minute, max over min in %; None if no sample is past it."""
    late = [s["rss_mib"] for s in samples if s["t_s"] >= WARM_S]
    return round((max(late) / min(late) - 1) * 100, 1) if late else None


def soak(
    settings: Settings,
    texts: Sequence[str],
    rate: float,
    duration_s: float,
    sample_every_s: float = 10.0,
    log_path: Path | None = None,
    recipients: int = 5000,
    history_max_bytes: int = 4 * 2**20,
) -> dict:
    """Send `rate` messages a second for `duration_s` to one worker; return the figures."""
    worker_settings = soak_settings(settings, history_max_bytes)
    kafka = worker_settings.kafka
    metrics_url = f"http://127.0.0.1:{worker_settings.metrics_port}/metrics"
    rng = np.random.default_rng(0)
    n = int(rate * duration_s)
    stream = [texts[i] for i in rng.choice(len(texts), n)]
    to = [f"+44 7700 {r:06d}" for r in rng.integers(0, recipients, n)]
    log_path = log_path or Path("out/soak-worker.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    load_before = os.getloadavg()
    with log_path.open("w") as log:
        proc = start_fraud_process("worker", worker_settings, log)
        reader = ScoreReader(kafka)
        probe = None
        stop = threading.Event()
        try:
            warm = send_messages(kafka, [f"warm-up {i}" for i in range(4)], "warm", None)
            reader.wait_for(list(warm), timeout_s=180)
            probe = LagProbe(worker_settings)
            start = time.monotonic()

            def sample() -> None:
                samples.append(
                    {
                        "t_s": round(time.monotonic() - start, 1),
                        "rss_mib": round(proc_status_bytes(proc.pid, "VmRSS") / 2**20, 1),
                        "lag": probe.lag(),
                        **history_gauges(metrics_url),
                    }
                )

            def sampler() -> None:
                while not stop.wait(sample_every_s):
                    sample()

            sample()
            thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
            thread.start()
            sent = send_messages(kafka, stream, "soak", rate, recipients=to)
            send_s = time.monotonic() - start
            reader.wait_for(list(sent), timeout_s=600)
            stop.set()
            thread.join()
            deadline = time.monotonic() + 60  # the last batch's commit
            while probe.lag() and time.monotonic() < deadline:
                time.sleep(0.5)
            sample()
            decided = len(reader.seen) - len(warm)
        finally:
            stop.set()
            reader.close()
            if probe is not None:
                probe.close()
            stop_process(proc)
    lines = log_path.read_text(errors="replace").splitlines()
    full = [s["t_s"] for s in samples if s["history_bytes"] >= 0.9 * history_max_bytes]
    return {
        "rate_per_s": rate,
        "duration_s": round(send_s, 1),
        "messages_sent": n,
        "messages_decided": decided,
        "recipients": recipients,
        "history_max_bytes": history_max_bytes,
        "history_full_at_s": full[0] if full else None,
        "history_entries_max": max(s["history_entries"] for s in samples),
        "history_bytes_max": max(s["history_bytes"] for s in samples),
        "rss_mib_start": samples[0]["rss_mib"],
        "rss_mib_end": samples[-1]["rss_mib"],
        "rss_mib_max": max(s["rss_mib"] for s in samples),
        "rss_spread_after_1min_pct": flat_after_warm_up(samples),
        "flat_bar_pct": FLAT_PCT,
        "lag_max": max(s["lag"] for s in samples),
        "lag_end": samples[-1]["lag"],
        "worker_warnings": sum(" WARNING " in line for line in lines),
        "worker_errors": sum(" ERROR " in line or "Traceback" in line for line in lines),
        "worker_exit_code": proc.returncode,
        "worker_log": str(log_path),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "samples": samples,
    }
