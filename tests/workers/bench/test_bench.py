"""`fraud bench` runs: its end-to-end part on the real broker, its CLI on a small CSV."""

import json

import pytest

from fraud.config import Settings
from workers.bench.end_to_end import end_to_end_bench

pytestmark = [pytest.mark.model]

TEXTS = [
    "URGENT: your account is locked, verify at nb-login.co",
    "running late, order me a flat white",
    "Your parcel is held, pay the 1.99 fee at parcel-fee.example",
    "see you at the station at 6",
]


@pytest.mark.integration
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_end_to_end_bench_measures_every_message(seed_index_dir, kafka_settings, exactly_once):
    settings = Settings().model_copy(update={"kafka": kafka_settings, "index_dir": seed_index_dir})
    result = end_to_end_bench(settings, TEXTS, 20, 10, exactly_once=exactly_once)
    assert result["exactly_once"] is exactly_once
    assert result["saturation_messages_per_s"] > 0
    latency = result["latency_at_half_saturation"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert result["worker_peak_rss_mib"] > 100  # a process that loaded a transformer
    # Memory at start (models loaded) and after the first batch, both up to the peak.
    start, first = result["worker_rss_mib_at_start"], result["worker_rss_mib_after_first_batch"]
    assert 100 < start <= result["worker_peak_rss_mib"]
    assert 100 < first <= result["worker_peak_rss_mib"]
    # One worker's stage profile at saturation, from its /metrics: every message batched.
    profile = result["stage_profile_at_saturation"]
    assert profile["batches"] >= 1 and profile["fraction_of_wall"]["encode"] > 0
    assert profile["mean_batch_messages"] == round(20 / profile["batches"], 1)
    # And at half load: the latency's profile (batches of a few messages each).
    half = result["stage_profile_at_half_load"]
    assert half["batches"] >= 1 and half["ms_per_batch"]["encode"] > 0
    assert half["mean_batch_messages"] == round(10 / half["batches"], 1)
    cores = result["cpu_cores_at_half_load"]
    assert cores["workers"] > 0 and cores["broker"] is None  # no local broker's pid given
    assert cores["load_generator"] >= 0  # in clock ticks: 0 over a short run


@pytest.mark.integration
def test_scale_out_runs_two_workers_on_four_partitions(seed_index_dir, kafka_settings):
    """The scale-out run: a consumer group of 2 workers shares an input topic of 4
    partitions, and every message gets its decision (wait_for raises otherwise)."""
    settings = Settings().model_copy(update={"kafka": kafka_settings, "index_dir": seed_index_dir})
    result = end_to_end_bench(settings, TEXTS, 20, 10, workers=2, partitions=4)
    assert (result["workers"], result["partitions"]) == (2, 4)
    assert result["saturation_messages_per_s"] > 0
    assert result["broker_cpu_cores_at_saturation"] is None  # no local broker's pid given


def test_fraud_bench_without_the_broker_writes_its_report(tmp_path, capsys):
    """The encoder, its variants, the anchor's encode and `fraud serve` under load, in
    one run (few texts and requests: this checks the report, it is not a measurement)."""
    from workers.cli.main import main

    csv_path = tmp_path / "m.csv"
    csv_path.write_text("label,text\n" + "".join(f"ham,{t}\n" for t in TEXTS))
    out = tmp_path / "bench.json"
    args = ["bench", "--csv", str(csv_path), "--sizes", "", "--no-end-to-end"]
    args += ["--serve-requests", "24", "--serve-latency-requests", "12", "--serve-concurrency", "4"]
    assert main([*args, "--encoder-texts", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["encoder"]["rows"]
    assert [r["batch_size"] for r in rows] == [1, 8, 16, 32, 128]
    assert all(r["messages_per_s"] > 0 and 0 < r["fraction_of_bound"] for r in rows)
    assert report["encoder"]["bound_messages_per_s"] > 0
    variants = report["variants"]
    assert set(variants) == {"onnx-int8-row", "onnx-int8", "onnx-fp32", "torch-bf16", "torch-fp32"}
    assert variants["torch-fp32"]["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    assert variants["onnx-fp32"]["keeps_embeddings"] and variants["torch-bf16"]["keeps_embeddings"]
    # The anchor: sentence-transformers on the same texts, and its ratios in the report.
    assert set(report["anchor_ratios"]) == {
        "encoder_over_sentence_transformers_fp32",
        "encoder_over_sentence_transformers_bf16",
    }
    assert report["command"].startswith("fraud bench --csv ") and report["load_average_before"]
    # `fraud serve` in the same run: every request answered, against the same encoder rows.
    serve = report["serve"]
    assert serve["saturation_messages_per_s"] > 0 and serve["server_exit_code"] == 0
    assert serve["answered"] == serve["requests"] == {"saturation": 24, "latency": 12}
    latency = serve["latency_at_half_saturation"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert serve["server_cpu_cores_at_saturation"] > 0
    # Memory once ready, after the first request and at peak: a process with a transformer.
    peak = serve["server_peak_rss_mib"]
    start, first = serve["server_rss_mib_at_start"], serve["server_rss_mib_after_first_request"]
    assert 100 < start <= peak and 100 < first <= peak
    best = max(r["messages_per_s"] for r in rows)
    at_16 = next(r["messages_per_s"] for r in rows if r["batch_size"] == 16)  # its chunks
    fractions = serve["fraction_of_encoder_alone"], serve["fraction_of_encoder_at_its_batch"]
    assert fractions == (
        round(serve["saturation_messages_per_s"] / best, 3),
        round(serve["saturation_messages_per_s"] / at_16, 3),
    )
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    assert "encoder alone" in out and "encoder variants" in out
    assert "fraud serve at saturation" in out and "after the first request" in out


@pytest.mark.integration
def test_a_short_soak_decides_every_message_and_ends_with_no_lag(
    seed_index_dir, kafka_settings, tmp_path
):
    from workers.bench.soak import soak

    settings = Settings().model_copy(update={"kafka": kafka_settings, "index_dir": seed_index_dir})
    result = soak(settings, TEXTS, 20, 3, sample_every_s=1, log_path=tmp_path / "worker.log")
    assert result["messages_sent"] == 60 and result["messages_decided"] == 60
    assert result["lag_end"] == 0 and result["worker_errors"] == 0
    assert len(result["samples"]) >= 3  # start, at least one while sending, end
    assert result["rss_mib_start"] > 100  # a process that loaded a transformer
    # Every message with a recipient joins the history, which the samples follow.
    assert 60 <= result["history_entries_max"] and result["history_max_bytes"] == 4 * 2**20
    assert 0 < result["history_bytes_max"] <= result["history_max_bytes"]
    assert result["worker_exit_code"] == 0  # stopped by SIGTERM, cleanly
