"""How much spelling tricks move a score: originals against their disguised variants.

A scammer who writes "P\\u0430yP\\u0430l" with Cyrillic a's, "c l i c k  h e r e" or "fr33"
hopes the words stop matching the references they resemble. `evasion_table` scores each
original and each variant with the same detector, so the gap between the two is what a
trick wins. The cases live with the tests (tests/fraud/quality/evasion_cases.py); `markdown_table`
turns the rows into the README's table.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fraud.scoring.detector import Detector
from fraud.text.normalize import normalize


@dataclass(frozen=True)
class EvasionCase:
    """One scam message and its disguises, keyed by the trick used ("homoglyph", "leet"...)."""

    name: str
    original: str
    variants: dict[str, str]


@dataclass(frozen=True)
class EvasionRow:
    case: str
    kind: str
    original_score: float
    variant_score: float
    same_text: bool  # the variant normalizes to exactly the original's normalized text

    @property
    def diff(self) -> float:
        """Variant score minus original score: negative when the trick lowered the score."""
        return self.variant_score - self.original_score


def evasion_table(detector: Detector, cases: Sequence[EvasionCase]) -> list[EvasionRow]:
    """One row per (case, variant), every text scored by `detector` in one batch."""
    texts: list[str] = []
    for case in cases:
        texts.append(case.original)
        texts.extend(case.variants.values())
    result = detector.score(detector.encode(texts), texts)
    scores = iter([a.score for a in result.assessments])
    rows: list[EvasionRow] = []
    for case in cases:
        original_score = next(scores)
        original_text = normalize(case.original)
        for kind, variant in case.variants.items():
            rows.append(
                EvasionRow(
                    case=case.name,
                    kind=kind,
                    original_score=original_score,
                    variant_score=next(scores),
                    same_text=normalize(variant) == original_text,
                )
            )
    return rows


def markdown_table(rows: Sequence[EvasionRow], before: Sequence[EvasionRow] | None = None) -> str:
    """The rows as a markdown table; with `before` (the same cases measured under another
    normalization), its variant score and diff are shown beside the current ones."""
    if before is not None:
        earlier = {(r.case, r.kind): r for r in before}
        lines = [
            "| case | variant | original | variant before | diff before | variant after "
            "| diff after |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            b = earlier[(r.case, r.kind)]
            lines.append(
                f"| {r.case} | {r.kind} | {r.original_score:.3f} | {b.variant_score:.3f} "
                f"| {b.diff:+.3f} | {r.variant_score:.3f} | {r.diff:+.3f} |"
            )
        return "\n".join(lines) + "\n"
    lines = [
        "| case | variant | original | variant | diff | same text |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.kind} | {r.original_score:.3f} | {r.variant_score:.3f} "
            f"| {r.diff:+.3f} | {'yes' if r.same_text else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def summary_by_kind(rows: Sequence[EvasionRow], tolerance: float = 0.1) -> dict[str, dict]:
    """Per trick: variants, how many normalize to the original's text, mean and worst
    absolute score change, and how many moved by more than `tolerance`."""
    out: dict[str, dict] = {}
    for kind in dict.fromkeys(r.kind for r in rows):
        mine = [r for r in rows if r.kind == kind]
        gaps = [abs(r.diff) for r in mine]
        out[kind] = {
            "variants": len(mine),
            "same_text": sum(r.same_text for r in mine),
            "mean_abs_diff": sum(gaps) / len(gaps),
            "max_abs_diff": max(gaps),
            "over_tolerance": sum(g > tolerance for g in gaps),
        }
    return out


# -- codes and tokens in genuine messages ----------------------------------------------------
# Genuine notices carry codes: a booking reference, an order number, a one-time code. A
# detector that learned a training set's spam codes as scam signal alerts on them (the first
# adapted encoder did: docs/quality.md). `token_table` scores messages plain and with a code
# of each kind appended, and counts the alerts.


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_HEX, _DIGITS = "0123456789abcdef", "0123456789"
_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
TOKEN_KINDS: dict[str, Callable[[random.Random], str]] = {
    "reference code": lambda r: "Ref: " + _chars(r, _HEX.upper(), 10),
    "hex token": lambda r: _chars(r, _HEX, r.choice((8, 12, 20, 32))),
    "order number": lambda r: (
        f"Order #{_chars(r, _DIGITS, 3)}-{_chars(r, _DIGITS, 7)}-{_chars(r, _DIGITS, 7)}"
    ),
    "one-time code": lambda r: "Code: " + _chars(r, _DIGITS, 6),
    "tracking number": lambda r: (
        f"Tracking: {_chars(r, _UPPER, 2)}{_chars(r, _DIGITS, 9)}{_chars(r, _UPPER, 2)}"
    ),
}


def with_tokens(texts: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """{"plain": texts, kind: each text with a code of that kind appended}, the codes drawn
    from a generator seeded per kind, so the variants are the same on every run."""
    out = {"plain": list(texts)}
    for n, (kind, make) in enumerate(TOKEN_KINDS.items()):
        rng = random.Random(seed * 1000 + n)  # noqa: S311 (reproducible test data, no secret)
        out[kind] = [f"{t} {make(rng)}" for t in texts]
    return out


def token_table(detector: Detector, texts: Sequence[str], seed: int = 0) -> dict[str, dict]:
    """Per kind ("plain" first): messages, alerts at the detector's threshold, and the mean
    and largest rise of a message's score over its plain score."""
    variants = with_tokens(texts, seed)
    flat = [t for kind in variants.values() for t in kind]
    result = detector.score(detector.encode(flat), flat)
    scores = np.array([a.score for a in result.assessments]).reshape(len(variants), len(texts))
    threshold = detector.params.threshold
    return {
        kind: {
            "messages": len(texts),
            "alerts": int((scores[k] >= threshold).sum()),
            "mean_rise": float((scores[k] - scores[0]).mean()),
            "max_rise": float((scores[k] - scores[0]).max()),
        }
        for k, kind in enumerate(variants)
    }
