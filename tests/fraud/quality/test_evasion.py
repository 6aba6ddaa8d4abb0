"""The evasion suite: a disguised scam must read, and score, like the scam it disguises."""

from difflib import SequenceMatcher
from types import SimpleNamespace

import numpy as np
import pytest

from fraud.quality.evasion import EvasionRow, evasion_table, markdown_table, summary_by_kind
from fraud.text.normalize import normalize
from tests.fraud.quality.evasion_cases import CASES
from tests.results import record_result

TOLERANCE = 0.1  # the most a trick may move a score
KINDS = {"homoglyph", "zero_width", "spacing", "leet", "fullwidth", "url", "combined"}
VARIANTS = [
    pytest.param(case.original, variant, id=f"{case.name}-{kind}")
    for case in CASES
    for kind, variant in case.variants.items()
]


def test_the_suite_has_its_cases_and_tricks():
    assert len(CASES) >= 15
    assert len({c.name for c in CASES}) == len(CASES)
    for case in CASES:
        assert set(case.variants) <= KINDS
        assert set(case.variants) >= KINDS - {"url"}
        for variant in case.variants.values():
            assert variant != case.original  # a disguise that changes nothing tests nothing
    assert sum("url" in c.variants for c in CASES) >= 8


@pytest.mark.parametrize(("original", "variant"), VARIANTS)
def test_a_variant_normalizes_to_its_original(original, variant):
    # Nearly: some tricks look like ordinary text and are left alone on purpose. "a s u s
    # p i c i o u s" joins the article, "10" in "Un10n" reads as a number, "f33" is too
    # short and "4pply" starts with a digit like "4g", so they keep their digits.
    plain, tricked = normalize(original).casefold(), normalize(variant).casefold()
    assert SequenceMatcher(None, plain, tricked).ratio() >= 0.95, (plain, tricked)


def test_most_variants_normalize_to_exactly_their_original():
    pairs = [(c.original, v) for c in CASES for v in c.variants.values()]
    exact = sum(normalize(o) == normalize(v) for o, v in pairs)
    assert exact >= 0.9 * len(pairs)


@pytest.mark.model
def test_a_variant_scores_within_tolerance_of_its_original(detector):
    """No trick moves a score by more than TOLERANCE: every original alerts (they are
    scams), and so does every variant of an original at least TOLERANCE above the
    threshold (one nearer may cross it within the tolerance: the security-code scam scores
    0.51 against 0.5 on the seed bank with the adapted encoder, and its spaced-out
    variants 0.46)."""
    rows = evasion_table(detector, CASES)
    assert len(rows) == sum(len(c.variants) for c in CASES)
    moved = [r for r in rows if abs(r.diff) > TOLERANCE]
    threshold = detector.params.threshold
    unalerted = [r for r in rows if r.original_score < threshold]
    clear = [r for r in rows if r.original_score >= threshold + TOLERANCE]
    flipped = [r for r in clear if r.variant_score < threshold]
    # The README's evasion table: pytest tests/fraud/quality/test_evasion.py -k tolerance -s
    print("\n| trick | variants | normalized to the original's text | mean abs diff | max |")
    print("|---|---:|---:|---:|---:|")
    for kind, s in summary_by_kind(rows, TOLERANCE).items():
        print(
            f"| {kind} | {s['variants']} | {s['same_text']} | {s['mean_abs_diff']:.3f} "
            f"| {s['max_abs_diff']:.3f} |"
        )
    assert not moved, markdown_table(moved)
    assert not unalerted, markdown_table(unalerted)
    assert not flipped, markdown_table(flipped)
    record_result(
        "evasion",
        "seed-index",
        cases=len(CASES),
        threshold=threshold,
        tolerance=TOLERANCE,
        by_kind=summary_by_kind(rows, TOLERANCE),
        variants_alerting=sum(r.variant_score >= threshold for r in rows),
    )


def _rows() -> list[EvasionRow]:
    return [
        EvasionRow("a", "leet", 0.9, 0.5, False),
        EvasionRow("a", "url", 0.9, 0.9, True),
        EvasionRow("b", "leet", 0.6, 0.62, True),
    ]


def test_the_table_and_summary():
    table = markdown_table(_rows())
    assert table.splitlines()[0].startswith("| case | variant | original | variant | diff")
    assert "| a | leet | 0.900 | 0.500 | -0.400 | no |" in table
    summary = summary_by_kind(_rows())
    assert summary["leet"]["variants"] == 2 and summary["leet"]["over_tolerance"] == 1
    assert summary["leet"]["max_abs_diff"] == pytest.approx(0.4)
    assert summary["url"]["same_text"] == 1


def test_the_table_against_an_earlier_measurement():
    before = [EvasionRow("a", "leet", 0.9, 0.2, False)]
    after = [EvasionRow("a", "leet", 0.9, 0.88, True)]
    table = markdown_table(after, before=before)
    assert "| a | leet | 0.900 | 0.200 | -0.700 | 0.880 | -0.020 |" in table


class _FakeDetector:
    """Scores a text by its length: enough to check the rows line up with the cases."""

    def encode(self, texts):
        return np.array([[len(t)] for t in texts], dtype=np.float32)

    def score(self, queries, texts):
        return SimpleNamespace(assessments=[SimpleNamespace(score=q[0] / 1000) for q in queries])


def test_rows_follow_the_cases_in_order():
    rows = evasion_table(_FakeDetector(), CASES[:2])
    expected = [(c.name, k) for c in CASES[:2] for k in c.variants]
    assert [(r.case, r.kind) for r in rows] == expected
    first = CASES[0]
    assert rows[0].original_score == pytest.approx(len(first.original) / 1000)
    assert rows[0].variant_score == pytest.approx(len(next(iter(first.variants.values()))) / 1000)
