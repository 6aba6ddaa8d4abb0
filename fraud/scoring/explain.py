"""An assessment as an analyst reads it (`fraud score`, the demo)."""

from fraud.schemas import Assessment
from fraud.scoring.detector import Detector


def format_assessment(assessment: Assessment, detector: Detector, width: int = 70) -> str:
    """Score and category, then the evidence with the text of each reference cited (an
    earlier message to the recipient for a history key); texts cut to `width`."""
    flag = "ALERT" if assessment.is_alert else "ok"
    lines = [
        f"{flag}  score {assessment.score:.3f} (threshold {detector.params.threshold:.2f})"
        + (f"  category {assessment.category}" if assessment.category else "")
    ]
    if assessment.category_distribution:
        dist = sorted(assessment.category_distribution.items(), key=lambda kv: -kv[1])
        lines.append("  categories: " + ", ".join(f"{c} {w:.3f}" for c, w in dist[:4]))
    for ev in assessment.evidence:
        if ev.source == "history":  # an earlier message to the same recipient
            where, text = f"{ev.message_id} (history)", "an earlier message to this recipient"
        else:
            where, text = f"#{ev.reference_id}", detector.index.reference(ev.reference_id).text
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(
            f"  evidence {where:<6} {ev.category:<13} sim {ev.similarity:.3f} "
            f"weight {ev.weight:.3f}  {text}"
        )
    return "\n".join(lines)
