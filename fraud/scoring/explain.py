"""A verdict as an analyst reads it: the text `fraud score` and `fraud demo` print.

Plain text, no terminal library: the library stays free of presentation dependencies, and
the callers print the string as they like.
"""

from typing import TYPE_CHECKING

from fraud.schemas import Verdict

if TYPE_CHECKING:  # a type only: importing the detector loads torch and FAISS
    from fraud.scoring.detector import Detector


def format_verdict(verdict: Verdict, detector: "Detector", width: int = 70) -> str:
    """Score, flag and category, then each piece of evidence with the text it cites (a
    reference of the detector's index, or an earlier message to the same recipient), cut to
    `width` characters."""
    flag = "ALERT" if verdict.is_alert else "ok"
    lines = [
        f"{flag}  score {verdict.score:.3f} (threshold {detector.params.threshold:.2f})"
        + (f"  category {verdict.category}" if verdict.category else "")
    ]
    if verdict.category_distribution:
        dist = sorted(verdict.category_distribution.items(), key=lambda kv: -kv[1])
        lines.append("  categories: " + ", ".join(f"{c} {w:.3f}" for c, w in dist[:4]))
    for ev in verdict.evidence:
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
