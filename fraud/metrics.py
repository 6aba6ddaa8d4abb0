"""Prometheus metric definitions. `build_metrics(registry)` returns one object holding all.

Names are fraud_<thing>_<unit> in base units; counters end in _total; labels come from
small fixed sets (categories, dead-letter reasons), never message ids or text.
"""

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

# No `<name>_created` series beside each counter and histogram: nothing here reads them.
disable_created_metrics()

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PROPAGATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
# The stages of a batch, each timed per batch: a fixed set, used as a label.
STAGES = ("decode", "encode", "search", "attention", "publish", "commit")
# How a batch whose encoding or scoring raised ended (fraud_batch_failures_total).
BATCH_FAILURE_OUTCOMES = ("isolated", "fatal")


@dataclass(frozen=True)
class WorkerMetrics:
    messages_consumed: Counter
    messages_scored: Counter
    alerts_published: Counter
    dead_letters: Counter
    batch_size: Histogram
    processing_latency: Histogram
    index_references: Gauge
    bank_changes: Counter
    verdict_propagation: Histogram
    history_recipients: Gauge
    history_entries: Gauge
    history_memory: Gauge
    consumer_lag: Gauge
    broker_waiting: Gauge
    broker_waits: Counter
    broker_wait_seconds: Counter
    end_to_end_latency: Histogram
    stage_duration: Histogram
    scores: Histogram
    index_fraud_references: Gauge
    model_info: Info
    worker_up: Gauge
    batch_failures: Counter


def build_metrics(registry: CollectorRegistry) -> WorkerMetrics:
    metrics = WorkerMetrics(
        **_message_metrics(registry), **_latency_metrics(registry), **_state_metrics(registry)
    )
    for outcome in BATCH_FAILURE_OUTCOMES:  # at 0 from the start, so rate() sees the first
        metrics.batch_failures.labels(outcome)
    return metrics


def _message_metrics(registry: CollectorRegistry) -> dict:
    """What the worker read, scored, published and dead-lettered."""
    return dict(
        messages_consumed=Counter(
            "fraud_messages_consumed", "Records read from the input topic.", registry=registry
        ),
        messages_scored=Counter(
            "fraud_messages_scored", "Messages that received a decision.", registry=registry
        ),
        alerts_published=Counter(
            "fraud_alerts_published",
            "Alerts acknowledged by the broker, by top category.",
            ["category"],
            registry=registry,
        ),
        dead_letters=Counter(
            "fraud_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        ),
        batch_size=Histogram(
            "fraud_batch_size_messages",
            "Records per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        ),
        scores=Histogram(
            "fraud_score",
            "The fraud score of each scored message (0 to 1).",
            buckets=SCORE_BUCKETS,
            registry=registry,
        ),
        batch_failures=Counter(
            "fraud_batch_failures",
            "Batches whose encoding or scoring raised, by outcome: isolated (split until the "
            "failing messages were found; the rest scored) or fatal (a known-good probe "
            "failed too: the model is broken, the worker stops without committing).",
            ["outcome"],
            registry=registry,
        ),
        worker_up=Gauge(
            "fraud_worker_up",
            "1 while the worker's scoring loop runs.",
            registry=registry,
        ),
    )


def _latency_metrics(registry: CollectorRegistry) -> dict:
    """How long things took, and waits on the broker."""
    return dict(
        processing_latency=Histogram(
            "fraud_processing_latency_seconds",
            "From a record being polled to its decision being acknowledged by the broker.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        end_to_end_latency=Histogram(
            "fraud_end_to_end_latency_seconds",
            "From a message's Kafka timestamp to its decision acknowledged by the broker.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        stage_duration=Histogram(
            "fraud_stage_duration_seconds",
            "Time per batch in each stage: " + ", ".join(STAGES) + ".",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        ),
        verdict_propagation=Histogram(
            "fraud_verdict_propagation_seconds",
            "From an analyst verdict reaching the feedback topic to this worker scoring with it.",
            buckets=PROPAGATION_BUCKETS,
            registry=registry,
        ),
        broker_waiting=Gauge(
            "fraud_broker_waiting",
            "1 while the worker waits for the broker to acknowledge a batch longer than its "
            "flush timeout (the broker unreachable): it holds the batch and resumes.",
            registry=registry,
        ),
        broker_waits=Counter(
            "fraud_broker_waits",
            "Waits for the broker that outlasted the flush timeout.",
            registry=registry,
        ),
        broker_wait_seconds=Counter(
            "fraud_broker_wait_seconds",
            "Seconds spent in those waits, counted from the start of the flush.",
            registry=registry,
        ),
        consumer_lag=Gauge(
            "fraud_consumer_lag_messages",
            "Records of an assigned input partition not yet read (end offset - position).",
            ["topic", "partition"],
            registry=registry,
        ),
    )


def _state_metrics(registry: CollectorRegistry) -> dict:
    """The loaded index, the bank changes applied, the recipients' history."""
    return dict(
        index_references=Gauge(
            "fraud_index_references",
            "References in the loaded index, by label.",
            ["label"],
            registry=registry,
        ),
        index_fraud_references=Gauge(
            "fraud_index_fraud_references",
            "Fraud references in the loaded index, by category.",
            ["category"],
            registry=registry,
        ),
        bank_changes=Counter(
            "fraud_bank_changes_applied",
            "Reference-bank changes applied from the bank topic.",
            registry=registry,
        ),
        model_info=Info(
            "fraud_model",
            "The encoder, the index version and the scorer parameters in use.",
            registry=registry,
        ),
        history_recipients=Gauge(
            "fraud_history_recipients",
            "Recipients whose history this worker holds.",
            registry=registry,
        ),
        history_entries=Gauge(
            "fraud_history_entries",
            "Messages kept as history keys, over all recipients.",
            registry=registry,
        ),
        history_memory=Gauge(
            "fraud_history_memory_bytes",
            "Estimated memory of the recipients' histories.",
            registry=registry,
        ),
    )


# Request latencies of the inline service: its goal is a p99 of tens of milliseconds.
HTTP_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# The metrics of fraud/metrics.py that only a Kafka worker sets: the HTTP service
# (workers/serve/app.py) leaves them out of its registry rather than expose them idle.
WORKER_ONLY = (
    "worker_up",
    "consumer_lag",
    "broker_waiting",
    "broker_waits",
    "broker_wait_seconds",
    "dead_letters",
    "end_to_end_latency",
    "history_recipients",
    "history_entries",
    "history_memory",
)


@dataclass(frozen=True)
class ServeMetrics:
    """The HTTP service's metrics: the worker's (same names, less WORKER_ONLY) and its own.
    Prometheus tells the two apart by the scrape job (fraud-worker, fraud-serve)."""

    scoring: WorkerMetrics
    requests: Counter
    request_duration: Histogram
    queued: Gauge
    ready: Gauge
    publish_errors: Counter
    publish_dropped: Counter
    publish_pending: Gauge
    bank_following: Gauge
    bank_follow_failures: Counter


def build_serve_metrics(registry: CollectorRegistry) -> ServeMetrics:
    scoring = build_metrics(registry)
    for name in WORKER_ONLY:
        registry.unregister(getattr(scoring, name))
    return ServeMetrics(
        scoring=scoring,
        requests=Counter(
            "fraud_http_requests",
            "HTTP requests answered, by route (a fixed set; 'other' for the rest) and status.",
            ["route", "code"],
            registry=registry,
        ),
        request_duration=Histogram(
            "fraud_http_request_duration_seconds",
            "From a request's arrival to its answer, by route.",
            ["route"],
            buckets=HTTP_LATENCY_BUCKETS,
            registry=registry,
        ),
        queued=Gauge(
            "fraud_serve_queued_messages",
            "Messages waiting for the scoring thread.",
            registry=registry,
        ),
        ready=Gauge(
            "fraud_serve_ready",
            "1 once the model and index are loaded and the scoring thread runs.",
            registry=registry,
        ),
        publish_errors=Counter(
            "fraud_publish_errors",
            "Decisions the broker did not acknowledge (fraud serve --publish).",
            registry=registry,
        ),
        publish_dropped=Counter(
            "fraud_serve_publish_dropped",
            "Decisions not published because FRAUD_SERVE__PUBLISH_QUEUE records were already "
            "waiting for the broker (fraud serve --publish); each was answered.",
            registry=registry,
        ),
        publish_pending=Gauge(
            "fraud_serve_publish_pending_records",
            "Records handed to the publisher and not yet acknowledged or failed.",
            registry=registry,
        ),
        bank_following=Gauge(
            "fraud_bank_following",
            "1 while the service keeps up with the bank topic (checked every few seconds), "
            "0 when it cannot (unreachable, deleted, stuck): it scores with the bank as last "
            "read; unset when the index is not linked to the bank.",
            registry=registry,
        ),
        bank_follow_failures=Counter(
            "fraud_bank_follow_failures",
            "Checks of the bank topic that found the service not following it.",
            registry=registry,
        ),
    )


def set_index_gauges(metrics: WorkerMetrics, detector) -> None:
    """The loaded index's reference counts and what decisions depend on: set after
    loading and after every bank change (the worker and the HTTP service alike)."""
    counts = detector.index.counts()
    for label in ("fraud", "legit"):
        metrics.index_references.labels(label).set(counts[label])
    for category, n in counts["fraud_by_category"].items():
        metrics.index_fraud_references.labels(category or "unspecified").set(n)
    metrics.model_info.info(detector.info)


def observe_bank_changes(metrics: WorkerMetrics, changes: list, now_s: float) -> None:
    """Count applied bank changes (fraud/index/changelog.py BankChange), and how long each analyst
    verdict among them took to arrive (now_s: time.time())."""
    metrics.bank_changes.inc(len(changes))
    for change in changes:
        if change.verdict_ms is not None:
            metrics.verdict_propagation.observe(max(now_s - change.verdict_ms / 1000, 0.0))
