"""`fraud soak`: a long stream at a steady rate through one `fraud worker` process (issue 8,
load). Every few seconds it samples the worker's resident memory and the consumer group's
lag (the input topic's end offsets minus the group's committed offsets); at the end it
waits for every decision and for the lag to return to zero, and counts the worker's
warnings and errors and the dead letters. A benchmark, not a test: minutes long.
"""

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fraud.config import Settings
from workers.bench import ScoreReader, proc_status_bytes, run_settings, send_messages
from workers.kafka_clients import make_consumer
from workers.processes import start_worker, stop_process


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


def soak(
    settings: Settings,
    texts: Sequence[str],
    rate: float,
    duration_s: float,
    sample_every_s: float = 10.0,
    log_path: Path | None = None,
) -> dict:
    """Send `rate` messages a second for `duration_s` to one worker; return the figures."""
    worker_settings = run_settings(settings, "soak")
    kafka = worker_settings.kafka
    rng = np.random.default_rng(0)
    n = int(rate * duration_s)
    stream = [texts[i] for i in rng.choice(len(texts), n)]
    log_path = log_path or Path("out/soak-worker.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    with log_path.open("w") as log:
        proc = start_worker(worker_settings, log)
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
                    }
                )

            def sampler() -> None:
                while not stop.wait(sample_every_s):
                    sample()

            sample()
            thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
            thread.start()
            sent = send_messages(kafka, stream, "soak", rate)
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
    return {
        "rate_per_s": rate,
        "duration_s": round(send_s, 1),
        "messages_sent": n,
        "messages_decided": decided,
        "rss_mib_start": samples[0]["rss_mib"],
        "rss_mib_end": samples[-1]["rss_mib"],
        "rss_mib_max": max(s["rss_mib"] for s in samples),
        "lag_max": max(s["lag"] for s in samples),
        "lag_end": samples[-1]["lag"],
        "worker_warnings": sum(" WARNING " in line for line in lines),
        "worker_errors": sum(" ERROR " in line or "Traceback" in line for line in lines),
        "worker_exit_code": proc.returncode,
        "worker_log": str(log_path),
        "samples": samples,
    }
