"""The benchmark commands through the CLI: `fraud soak` and `fraud bench-serve` write their
reports (workers/bench/commands.py assembles them), and the arithmetic they add."""

import json

import pytest

from workers.bench.commands import add_fractions_of_encoder, soak_passed
from workers.cli.main import main

TEXTS = [
    "URGENT: your account is locked, verify at nb-login.co",
    "running late, order me a flat white",
    "Your parcel is held, pay the 1.99 fee at parcel-fee.example",
    "see you at the station at 6",
]


def _csv(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("label,text\n" + "".join(f"ham,{t}\n" for t in TEXTS))
    return path


def test_each_end_to_end_run_is_a_fraction_of_the_encoders_best_rate():
    encoder = {
        "rows": [
            {"batch_size": 1, "messages_per_s": 100.0},
            {"batch_size": 16, "messages_per_s": 200.0},
        ]
    }
    runs = {"end_to_end": {"saturation_messages_per_s": 150.0, "workers": 1}, "scale_out": {}}
    runs["scale_out"]["saturation_messages_per_s"] = 250.0
    add_fractions_of_encoder(runs, encoder)
    assert runs["end_to_end"]["fraction_of_encoder_alone"] == 0.75
    assert runs["scale_out"]["fraction_of_encoder_alone"] == 1.25
    assert "fraction_of_encoder_at_its_batch" not in runs["end_to_end"]
    add_fractions_of_encoder(runs, encoder, batch_size=1)  # workers encoding in chunks of 1
    assert runs["end_to_end"]["fraction_of_encoder_at_its_batch"] == 1.5


@pytest.mark.parametrize(
    "change, passed",
    [
        ({}, True),
        ({"messages_decided": 59}, False),
        ({"lag_end": 3}, False),
        ({"worker_errors": 1}, False),
        ({"rss_spread_after_1min_pct": 10.5}, False),
        ({"rss_spread_after_1min_pct": None}, True),  # a soak shorter than the warm-up
    ],
)
def test_a_soak_passes_with_every_message_decided_no_lag_no_error_and_flat_memory(change, passed):
    report = {
        "messages_sent": 60,
        "messages_decided": 60,
        "lag_end": 0,
        "worker_errors": 0,
        "rss_spread_after_1min_pct": 2.0,
    }
    assert soak_passed({**report, **change}) is passed


@pytest.mark.integration
@pytest.mark.model
def test_fraud_soak_writes_its_report_with_the_command_that_ran_it(kafka_bootstrap, tmp_path):
    out = tmp_path / "soak.json"
    argv = ["soak", "--csv", str(_csv(tmp_path)), "--rate", "20", "--minutes", "0.05"]
    assert main([*argv, "--bootstrap-servers", kafka_bootstrap, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["messages_sent"] == report["messages_decided"] == 60
    assert report["command"].startswith("fraud ") and report["commit"]
    assert report["worker_log"] == str(tmp_path / "soak.log")
    assert (tmp_path / "soak.log").read_text()  # the worker's log, beside the report


@pytest.mark.model
def test_fraud_bench_serve_writes_the_service_against_the_encoder(tmp_path, capsys):
    out = tmp_path / "bench-serve.json"
    argv = ["bench-serve", "--csv", str(_csv(tmp_path)), "--encoder-texts", "4"]
    argv += ["--requests", "40", "--latency-requests", "20", "--concurrency", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["csv"] == str(tmp_path / "m.csv") and report["texts"] == 4
    assert report["encoder"]["cpu_cores"] > 0
    serve = report["serve"]
    assert serve["saturation_messages_per_s"] > 0 and serve["server_exit_code"] == 0
    # The same names as the worker's runs (workers/bench/commands.py: fractions_of_encoder).
    assert 0 < serve["fraction_of_encoder_alone"] <= serve["fraction_of_encoder_at_its_batch"]
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    assert "CPU: encoder alone" in printed and f"wrote {out}" in printed
