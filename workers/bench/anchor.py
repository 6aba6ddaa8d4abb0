"""`fraud bench`'s anchor: what a user would build instead, measured in the same run.

- sentence-transformers' `encode` on the bundled model (loaded from its directory, offline),
  in fp32 (its default) and in bf16, at its batch of 32, against the project's encoder on
  exactly the same texts;
- the plain pipeline (workers/bench/plain.py: kafka-python, sentence-transformers, FAISS
  flat search, a producer) through the same broker as the worker, at saturation.

The report gives each ratio (project / anchor): above 1, the project is faster.
"""

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fraud.config import Settings
from fraud.data import seed_references_path
from workers.bench.end_to_end import (
    ScoreReader,
    cpu_seconds,
    peak_rss_bytes,
    run_settings,
    send_messages,
    write_log_tail,
)
from workers.bench.timing import RepeatTimer
from workers.processes import start_fraud_process, stop_process

ST_BATCH = 32  # sentence-transformers' default batch size
# The plain pipeline alerts when the nearest reference is a fraud at this cosine or more
# (its detection quality is not what is measured).
PLAIN_THRESHOLD = 0.6


def sentence_transformers_bench(
    encoder, model_path: Path, texts: Sequence[str], repeats: int = 3, n: int = 512
) -> dict:
    """Messages/s of `SentenceTransformer.encode` (fp32 and bf16, batch 32) and of the
    project's `encoder` on the same `n` texts (median of `repeats` after a warm-up), and
    the project's rate over each."""
    import torch  # lazily, as sentence-transformers loads it
    from sentence_transformers import SentenceTransformer

    sample = [texts[i % len(texts)] for i in range(min(n, max(len(texts), 1)))]
    rates = {"project": _rate(lambda: encoder.encode(sample), len(sample), repeats)}
    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    with torch.inference_mode():
        run = lambda: model.encode(sample, batch_size=ST_BATCH, show_progress_bar=False)  # noqa: E731
        rates["sentence_transformers_fp32"] = _rate(run, len(sample), repeats)
        model.to(torch.bfloat16)
        rates["sentence_transformers_bf16"] = _rate(run, len(sample), repeats)
    project = rates["project"]
    return {
        "texts": len(sample),
        "batch_size": ST_BATCH,
        "project_variant": encoder.variant,
        "messages_per_s": rates,
        "project_over_fp32": round(project / rates["sentence_transformers_fp32"], 2),
        "project_over_bf16": round(project / rates["sentence_transformers_bf16"], 2),
    }


def _rate(run, n: int, repeats: int) -> float:
    timer = RepeatTimer(warmup=1, runs=repeats)
    for _ in timer:
        run()
    return round(n / timer.median_s(), 1)


def plain_config(settings: Settings, model_path: Path) -> dict:
    """The plain pipeline's configuration (plain.py) for settings' broker and topics."""
    k = settings.kafka
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "input_topic": k.input_topic,
        "scores_topic": k.scores_topic,
        "alert_topic": k.alert_topic,
        "group_id": k.group_id,
        "model_path": str(model_path),
        "references": str(seed_references_path()),
        "threshold": PLAIN_THRESHOLD,
    }


def start_plain_pipeline(settings: Settings, model_path: Path, log):
    """The plain pipeline as a child process on settings' broker and topics."""
    config = json.dumps(plain_config(settings, model_path))
    return start_fraud_process(config, settings, log, command=("-m", "workers.bench.plain"))


def plain_pipeline_bench(
    settings: Settings, model_path: Path, texts: Sequence[str], n_saturation: int = 1000
) -> dict:
    """The plain pipeline's throughput at saturation through settings' broker (timed as
    the worker is: from the first message's Kafka timestamp to the last decision's), its
    CPU and peak memory."""
    run = run_settings(settings, "plain")
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), n_saturation)]
    with tempfile.TemporaryFile("w+") as log:
        proc = start_plain_pipeline(run, model_path, log)
        reader = ScoreReader(run.kafka)
        try:
            warm = send_messages(run.kafka, [f"warm-up {i}" for i in range(4)], "warm", None)
            reader.wait_for(list(warm), timeout_s=300)
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            sent = send_messages(run.kafka, sample, "sat", None)
            done = reader.wait_for(list(sent), timeout_s=600)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            peak = peak_rss_bytes(proc.pid)
        except BaseException:
            write_log_tail(log)
            raise
        finally:
            reader.close()
            stop_process(proc)
    span_s = (max(done.values()) - min(sent.values())) / 1000
    return {
        "saturation_messages_per_s": round(n_saturation / span_s, 1),
        "cpu_cores_at_saturation": round((cpu1 - cpu0) / (wall1 - wall0), 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "messages": n_saturation,
    }
