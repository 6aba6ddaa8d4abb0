"""Figures a test measured, recorded for the docs' generated tables.

Some tests measure what the docs report (the fault tests count messages, duplicates and
recovery times; the evasion test how far each spelling trick moves a score). With
FRAUD_RESULTS_DIR set, `record_result(table, key, **figures)` merges `{key: figures}` into
`$FRAUD_RESULTS_DIR/<table>.json`, with the commit, the time, the machine's load average and
the test that measured them; without it, nothing is written, so an ordinary `make test`
leaves the committed files alone. `python -m workers.docs_tables` then turns those files
into the docs' tables (docs/reliability.md says which command runs which tests).

A test calls it after its assertions, so only a run that passed is recorded.
"""

import json
import os
import subprocess
import time
from pathlib import Path

ENV = "FRAUD_RESULTS_DIR"
DOCS = (":(exclude)docs", ":(exclude)README.md", ":(exclude)mkdocs.yml")


def _commit() -> str:
    """The checkout's commit, with "+changes" when its tracked files differ from it (the
    docs aside: editing a page while the tests run changes nothing they measure)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (
        "+changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".", *DOCS) else ""
    )


def record_result(table: str, key: str, **figures: object) -> None:
    """Merge one row of measured figures into $FRAUD_RESULTS_DIR/<table>.json, if set."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    path = Path(directory) / f"{table}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else {}
    rows[key] = {
        **figures,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").removesuffix(" (call)"),
        "commit": _commit(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps({"rows": dict(sorted(rows.items()))}, indent=2) + "\n")
    partial.replace(path)  # whole or not at all
