"""format_assessment: an assessment as `fraud score` and `fraud demo` print it."""

import pytest

from fraud.schemas import Assessment, Evidence
from fraud.scoring import format_assessment


@pytest.mark.model
def test_a_verdict_reads_with_bank_and_history_evidence(detector):
    ref_id = next(i for i in range(len(detector.index)) if detector.index.reference(i).label)
    verdict = Assessment(
        score=0.9,
        is_alert=True,
        category="delivery",
        category_distribution={"delivery": 0.9},
        evidence=[
            Evidence(reference_id=ref_id, category="delivery", similarity=0.8, weight=0.5),
            Evidence(
                source="history", message_id="m-7", category="delivery", similarity=0.7, weight=0.3
            ),
        ],
    )
    text = format_assessment(verdict, detector)
    assert text.startswith(f"ALERT  score 0.900 (threshold {detector.params.threshold:.2f})")
    assert f"#{ref_id}" in text and detector.index.reference(ref_id).text[:30] in text
    assert "m-7 (history)" in text and "earlier message to this recipient" in text
