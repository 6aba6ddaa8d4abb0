"""The docs: the README stays short, the MkDocs site builds with --strict (no broken link,
no missing page), and every generated table matches its result file (workers/docs_tables.py).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.results import record_result
from workers.docs_tables import bench_goal_table, main, quality_goal_table, regenerate

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the rest to docs/"


def test_the_site_builds_with_strict_and_without_a_warning(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean"]
        + ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # mkdocs-material's banner
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert not re.search(r"^WARNING", output, re.MULTILINE), output
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reliability" / "index.html").exists()


def test_every_generated_table_matches_its_result_file():
    differing = regenerate(DOCS, write=False)
    assert differing == [], f"{differing}: python -m workers.docs_tables rewrites them"


def test_the_pages_generate_each_table():
    """Each renderer is used by a page, so no result file is left unshown."""
    pages = "".join(p.read_text() for p in DOCS.rglob("*.md"))
    tables = ("soak", "faults", "evasion", "tokens", "replay", "console", "bench-serve")
    for table in (*tables, "quality-goal", "bench-goal"):
        assert f"<!-- results: {table}" in pages, table


def _docs_with_a_soak_table(tmp_path: Path, table: str = "") -> Path:
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    shutil.copy(DOCS / "results" / "soak.json", docs / "results" / "soak.json")
    (docs / "page.md").write_text(
        f"# A page\n\n<!-- results: soak -->\n{table}<!-- /results -->\n\n"
        "A marker quoted in a sentence, `<!-- results: nosuch -->`, is none.\n"
    )
    return docs


def test_the_check_names_a_table_that_differs_and_a_rewrite_fixes_it(tmp_path, capsys):
    docs = _docs_with_a_soak_table(tmp_path, "| run | typed by hand |\n")
    assert main(["--check", "--docs", str(docs)]) == 1
    assert f"{docs / 'page.md'}: soak: differs from its result file" in capsys.readouterr().err
    assert main(["--docs", str(docs)]) == 0
    page = (docs / "page.md").read_text()
    assert "typed by hand" not in page and "30,000 of 30,000" in page
    assert page.startswith("# A page\n") and page.endswith("`<!-- results: nosuch -->`, is none.\n")
    assert main(["--check", "--docs", str(docs)]) == 0


def test_a_changed_result_file_makes_the_check_fail(tmp_path, capsys):
    docs = _docs_with_a_soak_table(tmp_path)
    assert main(["--docs", str(docs)]) == 0
    run = json.loads((docs / "results" / "soak.json").read_text())
    run["lag_max"] += 1
    (docs / "results" / "soak.json").write_text(json.dumps(run))
    assert main(["--check", "--docs", str(docs)]) == 1
    assert ": soak: differs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("page", "error"),
    [
        ("<!-- results: nosuch -->\n<!-- /results -->\n", "unknown table 'nosuch'"),
        ("<!-- results: soak -->\n| x |\n", "without its `<!-- /results -->`"),
        ("<!-- results: soak other.json -->\n<!-- /results -->\n", "other.json: no such result"),
    ],
)
def test_a_bad_marker_or_a_missing_file_is_one_line(tmp_path, capsys, page, error):
    docs = _docs_with_a_soak_table(tmp_path)
    (docs / "page.md").write_text(page)
    assert main(["--check", "--docs", str(docs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("docs_tables: error: ") and error in err
    assert len(err.strip().splitlines()) == 1


def test_record_result_merges_rows_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FRAUD_RESULTS_DIR", raising=False)
    record_result("faults", "a", messages=3)
    assert list(tmp_path.iterdir()) == []  # not asked: nothing written
    monkeypatch.setenv("FRAUD_RESULTS_DIR", str(tmp_path))
    record_result("faults", "b", messages=5, missing=0)
    record_result("faults", "a", messages=3)
    record_result("faults", "b", messages=6, missing=1)  # a rerun replaces its own row
    rows = json.loads((tmp_path / "faults.json").read_text())["rows"]
    assert list(rows) == ["a", "b"]
    assert rows["b"]["messages"] == 6 and rows["b"]["missing"] == 1
    assert rows["a"]["commit"] and rows["a"]["recorded_at"].endswith("Z")
    assert "test_record_result_merges_rows_only_when_asked" in rows["a"]["test"]
    assert isinstance(rows["a"]["load_average_1min"], float)


# Where a bench run's figures come from (the fields every bench table's context line reads).
BENCH_RUN = {
    "command": "fraud bench",
    "commit": "abc",
    "encoder_variant": "torch-bf16",
    "load_average_before": [0.1, 0, 0],
    "load_average_after": [0.2, 0, 0],
}


def test_the_scale_out_projection_stops_at_the_partitions(tmp_path):
    """Per core from the scale-out run; no more workers than partitions; the broker's
    cores at the projected rate (from its CPU at one worker's saturation)."""
    from workers.docs_tables import bench_projection_table

    run = {"workers": 1, "saturation_messages_per_s": 200.0, "worker_cpu_cores_at_saturation": 1.0}
    report = {
        **BENCH_RUN,
        "end_to_end": {**run, "broker_cpu_cores_at_saturation": 0.1},
        "scale_out": {
            **run,
            "workers": 2,
            "partitions": 4,
            "saturation_messages_per_s": 400.0,
            "worker_cpu_cores_at_saturation": 1.6,
        },
    }
    (tmp_path / "bench.json").write_text(json.dumps(report))
    table = bench_projection_table(tmp_path, ["bench.json"])
    assert "| 8 | 4 | 4 | 1,000 | partitions | 0.5 |" in table  # 250 msg/s a core, x4
    assert "| 32 | 32 | 32 | 8,000 | cores | 4.0 |" in table
    assert "2 workers on 4 partitions" in table


def test_the_serve_table_gives_fraud_bench_s_serve_part_or_says_it_is_missing(tmp_path):
    """`fraud serve` from the same run as the worker: saturation, its fractions of the
    encoder alone, latency at half of it, CPU and memory; a result file written before
    `fraud bench` had its serve part says so instead of failing."""
    from workers.docs_tables import bench_serve_table

    report = dict(BENCH_RUN)
    (tmp_path / "bench.json").write_text(json.dumps(report))
    table = bench_serve_table(tmp_path, ["bench.json"])
    assert table.startswith("`fraud serve` is not in this result file")
    assert "Command: `fraud bench` (commit abc;" in table
    report["serve"] = {
        "saturation_messages_per_s": 300.0,
        "fraction_of_encoder_alone": 0.75,
        "fraction_of_encoder_at_its_batch": 0.9,
        "latency_at_half_saturation": {"rate_per_s": 150.0, "p50_ms": 20.5, "p99_ms": 45.0},
        "server_cpu_cores_at_saturation": 1.4,
        "load_generator_cpu_cores_at_saturation": 0.05,
        "server_rss_mib_at_start": 600.1,
        "server_rss_mib_after_first_request": 610.2,
        "server_peak_rss_mib": 700.4,
        "requests": {"saturation": 1500, "latency": 1000},
        "answered": {"saturation": 1500, "latency": 1000},
        "concurrency": 64,
        "service": {"max_batch": 32, "batch_wait_ms": 2.0},
    }
    (tmp_path / "bench.json").write_text(json.dumps(report))
    table = bench_serve_table(tmp_path, ["bench.json"])
    assert (
        "| `fraud serve` | 300.0 | 75% / 90% | 20.5 / 45.0 | 1.4 | 600.1 / 610.2 / 700 |" in table
    )
    assert "1,500 requests over 64 connections" in table and "(answered: 1,500 and 1,000)" in table


def test_the_goal_table_says_missed_where_a_figure_falls_short(tmp_path):
    """Issue 19's goal table reads its verdicts off the result files: one figure moved below
    its goal turns that row, and only that row, to missed."""
    names = ["quality-dev.json", "default_dev.json", "default_dev_worker_r50_p2.json"]
    names.append("quality-uci.json")
    for name in names:
        shutil.copy(DOCS / "results" / name, tmp_path / name)
    before = quality_goal_table(tmp_path, names).count("**missed**")
    report = json.loads((tmp_path / "default_dev.json").read_text())
    fraud = report["mappings"]["smishing:ham"]
    assert fraud["false_alert_rate"] <= 0.01  # met in the committed file
    fraud["false_alert_rate"] = 0.02
    (tmp_path / "default_dev.json").write_text(json.dumps(report))
    table = quality_goal_table(tmp_path, names)
    assert table.count("**missed**") == before + 1
    assert "| the default: false alerts <= 1% | smishing vs ham | 2.00% | **missed** |" in table


def test_the_bench_goal_table_follows_its_runs(tmp_path):
    """Issue 21's goal table: a worker's p99 moved under the goal turns that cell to met,
    and a run without the serve part says so instead of a verdict."""
    run = json.loads((DOCS / "results" / "bench.json").read_text())
    run["end_to_end"]["latency_at_half_saturation"]["p99_ms"] = 99.0
    run.pop("serve", None)
    (tmp_path / "bench.json").write_text(json.dumps(run))
    table = bench_goal_table(tmp_path, ["bench.json"])
    assert "| one worker: p99 <= 100 ms at half load | 99.0 ms (met) |" in table
    assert "| `fraud serve`: p99 <= 50 ms at half load | not in this run |" in table
