"""`fraud bench`, end to end through the real broker: a `fraud worker` process scores
messages a producer sends; throughput at saturation, latency at half of it, and the
worker's CPU and peak memory (from /proc, Linux).

Latency is measured from each message's Kafka timestamp (set when the producer sent it)
to its score record's Kafka timestamp (set when the worker published its decision), both
on this machine's clock.
"""

import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from fraud.config import KafkaSettings, Settings
from workers.bench.timing import percentiles_ms
from workers.kafka import ensure_topics, make_consumer, make_producer, partition_count
from workers.processes import free_port, start_fraud_process, stop_process


def send_messages(
    kafka: KafkaSettings,
    texts: Sequence[str],
    prefix: str,
    rate: float | None,
    recipients: Sequence[str] | None = None,
) -> dict:
    """Send texts as messages at `rate` per second (None: at once), each to its recipient
    if `recipients` are given; {id: Kafka timestamp}."""
    producer = make_producer(kafka, linger_ms=1)
    try:
        start, futures = time.monotonic(), {}
        for n, text in enumerate(texts):
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            message_id = f"{prefix}-{n}"
            message = {"id": message_id, "text": text}
            if recipients is not None:
                message["recipient"] = recipients[n]
            value = json.dumps(message).encode()
            futures[message_id] = producer.send(kafka.input_topic, value, key=message_id.encode())
        producer.flush(60)
        return {m: f.get(timeout=0).timestamp for m, f in futures.items()}
    finally:
        producer.close(timeout=10)


class ScoreReader:
    """Reads the scores topic as decisions arrive: {message id: Kafka timestamp}."""

    def __init__(self, kafka: KafkaSettings) -> None:
        # Exactly-once: a decision counts once its transaction commits, as a subscriber
        # reading with read_committed sees it.
        isolation = "read_committed" if kafka.exactly_once else "read_uncommitted"
        self.consumer: KafkaConsumer = make_consumer(
            kafka, group_id=None, isolation_level=isolation
        )
        tp = TopicPartition(kafka.scores_topic, 0)
        self.consumer.assign([tp])
        self.consumer.seek_to_beginning(tp)
        self.seen: dict[str, int] = {}

    def wait_for(self, ids: Sequence[str], timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        missing = set(ids) - set(self.seen)
        while missing and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                for r in records:
                    self.seen[r.key.decode()] = r.timestamp
            missing = set(ids) - set(self.seen)
        if missing:
            raise TimeoutError(f"{len(missing)} of {len(ids)} messages got no decision")
        return {i: self.seen[i] for i in ids}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmRSS, VmHWM...) in bytes; 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid: int) -> int:
    return proc_status_bytes(pid, "VmHWM")


def wait_for_log_line(log, text: str, timeout_s: float, times: int = 1) -> bool:
    """Whether `text` appears `times` times in the file `log` (the output of one child, or
    of several sharing it) within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log.seek(0)
        if log.read().count(text) >= times:
            return True
        time.sleep(0.2)
    return False


def write_log_tail(log, chars: int = 3000) -> None:
    """The last `chars` of `log` (a child's output file) to stderr: why a measured run
    failed, printed before its exception goes on."""
    log.seek(0)
    sys.stderr.write(log.read()[-chars:])


def rss_mib(pids: Sequence[int], field: str = "VmRSS") -> float:
    """The largest of the processes' `field` (VmRSS: now; VmHWM: at peak), in MiB."""
    return round(max(proc_status_bytes(p, field) for p in pids) / 2**20, 1)


def stage_seconds(port: int, scored: int = 0, timeout_s: float = 30) -> dict[str, float]:
    """Seconds a worker has spent in each stage so far (the sums of its
    fraud_stage_duration_seconds histogram, from its /metrics), "batches" it timed and
    "scored", the messages it decided; read once it has decided at least `scored`. A
    worker counts a batch after its decisions are published, so a reader of the scores
    topic can see them before the batch is in the worker's metrics."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            body = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == "fraud_stage_duration_seconds_sum":
                    out[sample.labels["stage"]] = sample.value
                elif sample.name == "fraud_stage_duration_seconds_count":
                    out["batches"] = max(out.get("batches", 0), sample.value)
                elif sample.name == "fraud_messages_scored_total":
                    out["scored"] = sample.value
        if out.get("scored", 0) >= scored:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the worker's metrics count {out.get('scored', 0):.0f} messages decided "
                f"after {timeout_s:.0f} s, not {scored}"
            )
        time.sleep(0.05)


def stage_profile(
    before: dict[str, float], after: dict[str, float], wall_s: float, messages: int
) -> dict:
    """Where one worker's time went between two stage_seconds readings, over which it
    decided `messages`: each stage's seconds as a fraction of the wall time (encode runs
    on the encoder thread, the rest on the worker's thread, so the fractions overlap) and
    in ms a batch, and the mean batch size."""
    batches = after.get("batches", 0) - before.get("batches", 0)
    stages = {k: after[k] - before.get(k, 0.0) for k in after if k not in ("batches", "scored")}
    return {
        "batches": int(batches),
        "mean_batch_messages": round(messages / batches, 1) if batches else None,
        "fraction_of_wall": {k: round(v / wall_s, 3) for k, v in sorted(stages.items())},
        "ms_per_batch": {
            k: round(1000 * v / batches, 1) if batches else None for k, v in sorted(stages.items())
        },
    }


def run_settings(
    settings: Settings, prefix: str, workers: int = 1, partitions: int | None = None, **kafka
) -> Settings:
    """Settings for a measured run: topics and a consumer group of its own (the input topic
    with `partitions`, by default one per worker), every decision published, metrics on a
    free port."""
    run = f"{prefix}-{uuid.uuid4().hex[:8]}"
    topics = ("input", "scores", "alert", "dead_letter", "history")
    names = {f"{t}_topic": f"{run}-{t.replace('_', '-')}" for t in topics}
    k = settings.kafka.model_copy(
        update={**names, "group_id": run, "publish_scores": True, **kafka}
    )
    ensure_topics(k, [k.input_topic], partitions=partitions or workers)
    ensure_topics(k, [k.scores_topic, k.alert_topic])
    # One worker serves its metrics on a known port (its stage profile is read there);
    # several would share it, so they pick free ones.
    port = free_port() if workers == 1 else 0
    result = settings.model_copy(update={"kafka": k, "metrics_port": port})
    if workers > 1 and settings.encoder_threads is None:
        # Each process gets its share of the cores: torch's default (all cores each)
        # oversubscribes them.
        threads = max(1, (os.cpu_count() or 1) // workers)
        result = result.model_copy(update={"encoder_threads": threads})
    return result


def end_to_end_bench(
    settings: Settings,
    texts: Sequence[str],
    n_saturation: int = 1000,
    n_latency: int = 500,
    workers: int = 1,
    exactly_once: bool = False,
    partitions: int | None = None,
    broker_pid: int | None = None,
) -> dict:
    """Start `workers` worker processes (one consumer group, an input topic with
    `partitions`, by default as many) on settings' broker and index, then measure; with
    `exactly_once`, in the workers' transactional mode. Given the broker's `broker_pid`
    (a local broker), its CPU at saturation too: what the broker would need per message."""
    worker_settings = run_settings(
        settings, "bench", workers, partitions, exactly_once=exactly_once
    )
    kafka = worker_settings.kafka
    partitions = partition_count(kafka, kafka.input_topic)  # as the broker has it
    rng = np.random.default_rng(0)
    pick = lambda n: [texts[i] for i in rng.choice(len(texts), n)]  # noqa: E731
    with tempfile.TemporaryFile("w+") as log:
        procs = [start_fraud_process("worker", worker_settings, log) for _ in range(workers)]
        reader = ScoreReader(kafka)
        cpu = lambda: sum(cpu_seconds(p.pid) for p in procs)  # noqa: E731
        broker_cpu = lambda: cpu_seconds(broker_pid) if broker_pid else 0.0  # noqa: E731
        own_cpu = lambda: cpu_seconds(os.getpid())  # noqa: E731  (the producer, the reader)
        pids = [p.pid for p in procs]
        try:
            # Memory at start: once every worker has loaded its models and starts its loop
            # (their "scoring ..." log lines; None if they did not come within the time).
            # Waiting for all of them also keeps a late joiner's rebalance out of the
            # measurement.
            started = wait_for_log_line(log, "scoring ", timeout_s=180, times=workers)
            rss_start = rss_mib(pids) if started else None
            # One warm-up message per partition, so every worker has loaded its model.
            warm = send_messages(kafka, [f"warm-up {i}" for i in range(4 * workers)], "warm", None)
            reader.wait_for(list(warm), timeout_s=180)
            rss_first = rss_mib(pids)

            port = worker_settings.metrics_port
            stages0 = stage_seconds(port, len(warm)) if port else {}
            cpu0, broker0, wall0 = cpu(), broker_cpu(), time.monotonic()
            sent = send_messages(kafka, pick(n_saturation), "sat", None)
            done = reader.wait_for(list(sent), timeout_s=600)
            cpu1, broker1, wall1 = cpu(), broker_cpu(), time.monotonic()
            stages1 = stage_seconds(port, len(warm) + n_saturation) if port else {}
            profile = stage_profile(stages0, stages1, wall1 - wall0, n_saturation) if port else None
            span_s = (max(done.values()) - min(sent.values())) / 1000
            saturation = n_saturation / span_s

            rate = saturation / 2
            wall2, cpu2, broker2, own2 = time.monotonic(), cpu(), broker_cpu(), own_cpu()
            sent = send_messages(kafka, pick(n_latency), "half", rate)
            done = reader.wait_for(list(sent), timeout_s=600)
            wall3, cpu3, broker3, own3 = time.monotonic(), cpu(), broker_cpu(), own_cpu()
            half = stage_seconds(port, len(warm) + n_saturation + n_latency) if port else {}
            half_profile = stage_profile(stages1, half, wall3 - wall2, n_latency) if port else None
            latency_ms = np.array([done[i] - sent[i] for i in sent], dtype=float)
            broker_cores = round((broker1 - broker0) / (wall1 - wall0), 2) if broker_pid else None
            return {
                "workers": workers,
                "partitions": partitions,
                "exactly_once": exactly_once,
                "saturation_messages_per_s": round(saturation, 1),
                "latency_at_half_saturation": {
                    "rate_per_s": round(rate, 1),
                    **percentiles_ms(latency_ms),
                },
                "worker_cpu_cores_at_saturation": round((cpu1 - cpu0) / (wall1 - wall0), 2),
                # The broker serves the bench's producer and score reader too: one write and
                # two reads of each message, one write and one read of each decision.
                "broker_cpu_cores_at_saturation": broker_cores,
                "worker_peak_rss_mib": rss_mib(pids, "VmHWM"),
                "worker_rss_mib_at_start": rss_start,
                "worker_rss_mib_after_first_batch": rss_first,
                "messages": {"saturation": n_saturation, "latency": n_latency},
                "stage_profile_at_saturation": profile,
                "stage_profile_at_half_load": half_profile,
                # Who had the cores while the latency was measured: at half load the
                # load generator sends each message in a request of its own.
                "cpu_cores_at_half_load": {
                    "workers": round((cpu3 - cpu2) / (wall3 - wall2), 2),
                    "broker": round((broker3 - broker2) / (wall3 - wall2), 2)
                    if broker_pid
                    else None,
                    "load_generator": round((own3 - own2) / (wall3 - wall2), 2),
                },
            }
        except BaseException:
            write_log_tail(log)
            raise
        finally:
            reader.close()
            for p in procs:
                p.terminate()  # all at once: they finish their batches in parallel
            for p in procs:
                stop_process(p)
