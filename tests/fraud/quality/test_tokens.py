"""Codes in genuine messages (fraud/quality/evasion.py's token table): the demo's genuine
messages, plain and with a reference code, a hex token, an order number, a one-time code or
a tracking number appended, scored by the shipped default detector. docs/reliability.md
shows the counts recorded in docs/results/tokens.json; this test checks the default still
raises them, within TOLERANCE alerts per kind."""

import json
import os
from pathlib import Path

import pytest

from fraud.data import demo_messages_path
from fraud.quality.evasion import TOKEN_KINDS, token_table, with_tokens
from tests.results import ENV, record_result

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results" / "tokens.json"
TOLERANCE = 1  # alerts per kind: a bf16 encoder on another CPU may move a borderline score


def _demo(expected_fraud: bool) -> list[str]:
    rows = [json.loads(line) for line in demo_messages_path().read_text().splitlines()]
    return [r["text"] for r in rows if (r["expected"] == "fraud") == expected_fraud]


def test_the_variants_are_the_same_on_every_run_and_differ_by_kind():
    texts = ["See you at 5", "Your table is booked for 7pm"]
    first, again = with_tokens(texts), with_tokens(texts)
    assert first == again and list(first) == ["plain", *TOKEN_KINDS]
    assert first["plain"] == texts
    for kind in TOKEN_KINDS:
        assert all(
            v.startswith(t + " ") and v != t for t, v in zip(texts, first[kind], strict=True)
        )
    assert first["order number"][0].split(" ")[-2] == "Order"
    assert with_tokens(texts, seed=1)["hex token"] != first["hex token"]


@pytest.fixture(scope="module")
def default_detector(encoder):
    """The shipped default (`fraud index build` without arguments), from its cache."""
    from fraud.config import Settings
    from fraud.fitting.default import build_default
    from fraud.scoring import Detector

    cached, why_not = build_default(encoder, {}, progress=False)
    assert why_not is None  # its shipped head, its fitted threshold
    return Detector.from_settings(Settings(), cached)


@pytest.mark.model
def test_codes_in_genuine_and_scam_messages_on_the_default(default_detector):
    genuine = token_table(default_detector, _demo(False))
    scams = token_table(default_detector, _demo(True))
    # A code appended to a scam never hides it: as many alert as without one, or more.
    assert all(s["alerts"] >= scams["plain"]["alerts"] - TOLERANCE for s in scams.values())
    if not os.environ.get(ENV):
        recorded = json.loads(RESULTS.read_text())["rows"]["default"]
        for kind, row in genuine.items():
            expected = recorded["genuine"][kind]["alerts"]
            assert abs(row["alerts"] - expected) <= TOLERANCE, (kind, row, expected)
    record_result(
        "tokens",
        "default",
        threshold=default_detector.params.threshold,
        encoder=default_detector.encoder.name,
        tolerance=TOLERANCE,
        genuine=genuine,
        scams=scams,
    )
