"""The metric definitions (fraud/metrics.py), each test on a registry of its own, read with
get_sample_value as prometheus client_python's own tests do."""

import re
from dataclasses import fields

import pytest
from prometheus_client import CollectorRegistry, Counter

from fraud.metrics import (
    BATCH_FAILURE_OUTCOMES,
    WORKER_ONLY,
    WorkerMetrics,
    build_metrics,
    build_serve_metrics,
)

# Base units only (STYLE.md): seconds, never milliseconds or minutes; bytes, never KiB.
NOT_BASE_UNITS = {"ms", "millis", "milliseconds", "minutes", "hours", "kb", "kib", "mb", "mib"}
# What a histogram measures, as the last word of its name: time, size, or (fraud_score) a
# ratio in [0, 1], which has no unit.
HISTOGRAM_UNITS = {"seconds", "bytes", "messages"}


def _families(registry) -> dict[str, str]:
    """Every metric family of the registry: name -> type."""
    return {family.name: family.type for family in registry.collect()}


def test_every_name_is_fraud_thing_unit_in_base_units(fresh_registry):
    build_metrics(fresh_registry)
    families = _families(fresh_registry)
    assert len(families) == len(fields(WorkerMetrics))  # one family per metric
    for name, kind in families.items():
        assert re.fullmatch(r"fraud(_[a-z0-9]+)+", name), name
        words = set(name.split("_")[1:])
        assert not words & NOT_BASE_UNITS, name
        assert "total" not in words, f"{name}: the client adds _total to a counter"
        if kind == "histogram" and name != "fraud_score":
            assert name.rsplit("_", 1)[1] in HISTOGRAM_UNITS, name
        if "latency" in words or "duration" in words or "propagation" in words:
            assert name.endswith("_seconds"), name
        if "memory" in words:
            assert name.endswith("_bytes"), name


def test_counters_are_exposed_with_total_and_start_at_zero(fresh_registry):
    metrics = build_metrics(fresh_registry)
    assert fresh_registry.get_sample_value("fraud_messages_consumed_total") == 0.0
    counters = [m for m in vars(metrics).values() if isinstance(m, Counter)]
    assert len(counters) == 8
    for counter in counters:  # a child for a labeled one, so that it has a sample
        names = counter._labelnames
        (counter.labels(*["x"] * len(names)) if names else counter).inc(0)
    for family in fresh_registry.collect():
        if family.type == "counter":
            assert family.samples, family.name
            assert {s.name for s in family.samples} == {f"{family.name}_total"}, family.name
    metrics.messages_consumed.inc(3)
    assert fresh_registry.get_sample_value("fraud_messages_consumed_total") == 3.0
    metrics.dead_letters.labels("invalid_json").inc()
    value = fresh_registry.get_sample_value("fraud_dead_letters_total", {"reason": "invalid_json"})
    assert value == 1.0


def test_each_batch_failure_outcome_is_exposed_at_zero_from_the_start(fresh_registry):
    build_metrics(fresh_registry)
    for outcome in BATCH_FAILURE_OUTCOMES:
        labels = {"outcome": outcome}
        assert fresh_registry.get_sample_value("fraud_batch_failures_total", labels) == 0.0


def test_a_stage_is_observed_in_seconds_under_its_label(fresh_registry):
    metrics = build_metrics(fresh_registry)
    metrics.stage_duration.labels("search").observe(0.002)
    labels = {"stage": "search"}
    assert fresh_registry.get_sample_value("fraud_stage_duration_seconds_count", labels) == 1
    assert fresh_registry.get_sample_value(
        "fraud_stage_duration_seconds_sum", labels
    ) == pytest.approx(0.002)


def test_the_serve_registry_leaves_out_exactly_the_worker_only_metrics(fresh_registry):
    worker_registry = CollectorRegistry()
    worker = build_metrics(worker_registry)
    serve = build_serve_metrics(fresh_registry)
    worker_names = set(_families(worker_registry))
    serve_names = set(_families(fresh_registry))
    only_worker = {getattr(worker, field).describe()[0].name for field in WORKER_ONLY}
    assert worker_names - serve_names == only_worker
    assert len(only_worker) == len(WORKER_ONLY)
    own = serve_names - worker_names
    assert own == {
        "fraud_http_requests",
        "fraud_http_request_duration_seconds",
        "fraud_serve_queued_messages",
        "fraud_serve_ready",
        "fraud_publish_errors",
        "fraud_serve_publish_dropped",
        "fraud_serve_publish_pending_records",
        "fraud_bank_following",
        "fraud_bank_follow_failures",
    }
    serve.scoring.messages_scored.inc()
    assert fresh_registry.get_sample_value("fraud_messages_scored_total") == 1.0
    assert fresh_registry.get_sample_value("fraud_worker_up") is None  # left out
