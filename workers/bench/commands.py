"""The runs behind `fraud bench`, `fraud bench-serve` and `fraud soak`.

Each function runs one part of a command's JSON report and returns it, as a dict ready for
the report; the command (workers/cli/bench.py) reads the flags, calls these in order,
prints each part as it comes and writes the file. The measurements themselves are in the
modules beside this one (encoder, retrieval, end_to_end, serve, soak). `say` is where a
run's progress lines go (the command prints them).
"""

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud.config import Settings
from fraud.data import seed_references_path
from fraud.datasets import read_labeled_csv
from fraud.encoding import ENCODER_VARIANTS, Encoder
from fraud.encoding.cache import CachedEncoder
from fraud.index import build_index
from workers.bench.anchor import plain_pipeline_bench
from workers.bench.encoder import encoder_bench, variant_quality, variants_bench
from workers.bench.end_to_end import end_to_end_bench
from workers.bench.serve import serve_bench
from workers.bench.soak import FLAT_PCT, soak
from workers.broker import LocalBroker

if TYPE_CHECKING:  # a type only: the evaluation harness loads scikit-learn
    from fraud.fitting import Dataset

Say = Callable[[str], None]


def seed_index_dir(settings: Settings, encoder, stack: ExitStack) -> Path:
    """The seed set indexed with `encoder` into a temporary directory that `stack` removes:
    the index the benchmarks score against."""
    index_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "index"
    items = read_labeled_csv(seed_references_path())
    build_index(encoder, items, "seed", settings.scorer.model_dump(), False).save(index_dir)
    return index_dir


def pipeline_settings(
    settings: Settings, encoder, stack: ExitStack, local_broker: bool
) -> Settings:
    """For the benchmarks through Kafka: settings with a broker (settings' own, or with
    `local_broker` one started for the run) and the seed set indexed into a temporary
    directory; both are cleaned up when `stack` closes."""
    kafka = settings.kafka
    if local_broker:
        broker = stack.enter_context(LocalBroker())
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    index_dir = seed_index_dir(settings, encoder, stack)
    return settings.model_copy(update={"kafka": kafka, "index_dir": index_dir})


# -- fraud bench -------------------------------------------------------------------------


def variant_encoders(settings: Settings) -> Callable[[str], Encoder]:
    """A function that builds the encoder of a variant (onnx-int8, torch-fp32, ...) with
    `settings` otherwise, each once: for speed and then for --quality."""
    built: dict[str, Encoder] = {}

    def make(variant: str) -> Encoder:
        if variant not in built:
            update = {"encoder_variant": variant}
            built[variant] = Encoder.from_settings(settings.model_copy(update=update))
        return built[variant]

    return make


def variants_part(
    settings: Settings,
    texts: Sequence[str],
    say: Say,
    dataset: "Dataset | None" = None,
    cache_dir: Path = Path(".cache/embeddings"),
) -> dict[str, dict]:
    """Every encoder variant on `texts`: speed, fidelity to fp32 and, given a labeled
    `dataset`, the shipped scorer's cross-validated PR-AUC with its embeddings (slow: one
    cross-validation per variant; the embeddings cached in `cache_dir`)."""
    make = variant_encoders(settings)
    say(f"encoder variants, batch {settings.encode_batch_size} ...")
    rows = variants_bench(make, texts)
    if dataset is not None:
        say(f"quality: {len(dataset.y)} messages, 5-fold CV per variant ...")
        embeddings = {
            v: CachedEncoder(make(v), cache_dir).encode(dataset.texts) for v in ENCODER_VARIANTS
        }
        for variant, q in variant_quality(dataset, embeddings).items():
            rows[variant].update({f"cv_{k}": v for k, v in q.items()})
    return rows


def end_to_end_part(
    settings: Settings,
    encoder,
    texts: Sequence[str],
    messages: int,
    say: Say,
    workers: int = 1,
    exactly_once: bool = True,
    local_broker: bool = True,
    plain_model: Path | None = None,
    partitions: int | None = None,
) -> dict[str, dict]:
    """Through the broker with worker processes: "end_to_end" with one worker, "scale_out"
    with `workers` (when more than one) on an input topic of `partitions` (default: as
    many as workers), "exactly_once" in the transactional mode (when asked); `messages` at
    saturation, half as many at half of it. Given `plain_model` (a sentence-transformers
    model directory), "plain_pipeline": the anchor's plain pipeline
    (workers/bench/plain.py) through the same broker, at saturation. With a local broker,
    each worker run records the broker's CPU too."""
    runs: dict[str, dict] = {}
    with ExitStack() as stack:
        broker_pid = None
        if local_broker:
            broker = stack.enter_context(LocalBroker())
            broker_pid = broker.pid
            kafka = settings.kafka.model_copy(
                update={"bootstrap_servers": broker.bootstrap_servers}
            )
            settings = settings.model_copy(update={"kafka": kafka})
        run = pipeline_settings(settings, encoder, stack, local_broker=False)
        say("end to end through the broker ...")
        runs["end_to_end"] = end_to_end_bench(
            run, texts, messages, messages // 2, broker_pid=broker_pid
        )
        if workers > 1:  # scale out: the same, with more processes and partitions
            partitions = partitions or workers
            say(f"end to end with {workers} workers on {partitions} partitions ...")
            runs["scale_out"] = end_to_end_bench(
                run,
                texts,
                messages,
                messages // 2,
                workers,
                partitions=partitions,
                broker_pid=broker_pid,
            )
        if exactly_once:  # what one transaction per batch costs
            say("end to end, exactly-once ...")
            runs["exactly_once"] = end_to_end_bench(
                run, texts, messages, messages // 2, exactly_once=True, broker_pid=broker_pid
            )
        if plain_model is not None:
            say("the plain pipeline (sentence-transformers, FAISS flat) through the broker ...")
            runs["plain_pipeline"] = plain_pipeline_bench(run, plain_model, texts, messages)
    return runs


def anchor_ratios(report: dict[str, Any]) -> dict[str, float]:
    """The project over what a user would build instead, from the report's parts: the
    encoder over sentence-transformers' encode (fp32, bf16) on the same texts, and one
    worker end to end over the plain pipeline through the same broker."""
    out: dict[str, float] = {}
    if encode := report.get("anchor_encode"):
        out["encoder_over_sentence_transformers_fp32"] = encode["project_over_fp32"]
        out["encoder_over_sentence_transformers_bf16"] = encode["project_over_bf16"]
    if (plain := report.get("plain_pipeline")) and (e2e := report.get("end_to_end")):
        ratio = e2e["saturation_messages_per_s"] / plain["saturation_messages_per_s"]
        out["pipeline_over_plain_pipeline"] = round(ratio, 2)
    return out


def fractions_of_encoder(
    saturation: float, encoder: dict[str, Any], batch_size: int | None = None
) -> dict[str, float]:
    """A saturation rate as a fraction of the encoder's best rate alone and, given the
    `batch_size` the process encodes in (its chunks: encode_batch_size, for the worker and
    for `fraud serve`), of its rate alone at that batch size: the like-for-like comparison."""
    best = max(r["messages_per_s"] for r in encoder["rows"])
    same = [r["messages_per_s"] for r in encoder["rows"] if r["batch_size"] == batch_size]
    out = {"fraction_of_encoder_alone": round(saturation / best, 3)}
    if same:
        out["fraction_of_encoder_at_its_batch"] = round(saturation / same[0], 3)
    return out


def add_fractions_of_encoder(
    runs: dict[str, dict], encoder: dict[str, Any], batch_size: int | None = None
) -> None:
    """Each end-to-end run's fractions_of_encoder; at `batch_size` only for the project's
    workers (the plain pipeline encodes in batches of its own)."""
    for r in runs.values():
        size = batch_size if "workers" in r else None
        r.update(fractions_of_encoder(r["saturation_messages_per_s"], encoder, size))


def serve_part(
    settings: Settings,
    encoder: Encoder,
    texts: Sequence[str],
    encoder_report: dict[str, Any],
    say: Say,
    requests: int = 1500,
    latency_requests: int = 1000,
    concurrency: int = 64,
) -> dict[str, Any]:
    """`fraud serve` under load (workers/bench/serve.py) on the seed set indexed with
    `encoder`, and its saturation as fractions of the encoder alone (`encoder_report`,
    from encoder_bench): the "serve" part of `fraud bench` and of `fraud bench-serve`."""
    with ExitStack() as stack:
        index_dir = seed_index_dir(settings, encoder, stack)
        say("fraud serve under load ...")
        r = serve_bench(
            settings.model_copy(update={"index_dir": index_dir}),
            texts,
            requests,
            latency_requests,
            concurrency,
        )
    fractions = fractions_of_encoder(
        r["saturation_messages_per_s"], encoder_report, settings.encode_batch_size
    )
    return r | fractions


# -- fraud bench-serve -------------------------------------------------------------------


def bench_serve_report(
    settings: Settings,
    texts: Sequence[str],
    say: Say,
    encoder_texts: int = 1000,
    requests: int = 1500,
    latency_requests: int = 1000,
    concurrency: int = 64,
) -> dict[str, Any]:
    """`fraud serve` under load from this process, against the encoder alone at the batch
    sizes that matter (1, 8, the worker's and the service's): "load_average", "encoder"
    and "serve" of the report."""
    load = os.getloadavg()
    report: dict[str, Any] = {"load_average": load}
    say(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    encoder = Encoder.from_settings(settings)
    say(f"encoder alone: {min(len(texts), encoder_texts)} texts ...")
    sizes = sorted({1, 8, settings.encode_batch_size, settings.serve.max_batch})
    report["encoder"] = enc = encoder_bench(encoder, texts[:encoder_texts], sizes)
    report["serve"] = serve_part(
        settings, encoder, texts, enc, say, requests, latency_requests, concurrency
    )
    return report


# -- fraud soak --------------------------------------------------------------------------


def soak_report(
    settings: Settings,
    texts: Sequence[str],
    say: Say,
    rate: float,
    minutes: float,
    out: Path,
    recipients: int = 5000,
    history_mib: float = 4.0,
    local_broker: bool = True,
    command: str = "fraud soak",
) -> dict[str, Any]:
    """A steady stream of `rate` messages a second for `minutes` through one worker (its
    log beside `out`), with the command line and the commit that ran it."""
    with ExitStack() as stack:
        run = pipeline_settings(settings, Encoder.from_settings(settings), stack, local_broker)
        say(f"soak: {rate} msg/s for {minutes} min ...")
        r = soak(
            run,
            texts,
            rate,
            minutes * 60,
            log_path=out.with_suffix(".log"),
            recipients=recipients,
            history_max_bytes=int(history_mib * 2**20),
        )
    return {"command": command, "commit": git_commit(), **r}


def git_commit() -> str:
    """The short id of the checkout's commit ('' outside a git checkout): what a result
    file was measured on."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return commit.stdout.strip()


def soak_passed(report: dict[str, Any]) -> bool:
    """Every message decided, no lag and no error at the end, and the worker's memory flat
    after the first minute (within FLAT_PCT)."""
    ok = (
        report["messages_decided"] == report["messages_sent"]
        and not report["lag_end"]
        and not report["worker_errors"]
    )
    spread = report["rss_spread_after_1min_pct"]
    return ok and (spread is None or spread <= FLAT_PCT)
