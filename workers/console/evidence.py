"""What the alert page shows beside the message: the words it shares with each piece of
evidence, as segments the template marks, and the decision's evidence joined to the texts
the console knows (bank references, earlier messages)."""

import re

from workers.console.store import Store

_WORD = re.compile(r"\w+", re.UNICODE)
MIN_WORD = 3  # shorter words ("a", "to", "is") are shared by everything
# Longer words that most English messages share, left unmarked: marking them says nothing.
COMMON = frozenset(
    "the and for you your are our with this that have has was were will can not from "
    "now get its it's all any just here there they them their what when which who".split()
)


def words(text: str | None) -> set[str]:
    found = {w.lower() for w in _WORD.findall(text or "") if len(w) >= MIN_WORD}
    return found - COMMON


def segments(text: str | None, shared: set[str]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is_shared_word) in order: the template escapes each piece
    and marks the shared ones, so no HTML is ever built from the text."""
    if not text:
        return []
    out: list[tuple[str, bool]] = []
    at = 0
    for match in _WORD.finditer(text):
        if match.group().lower() in shared:
            if match.start() > at:
                out.append((text[at : match.start()], False))
            out.append((match.group(), True))
            at = match.end()
    if at < len(text):
        out.append((text[at:], False))
    return out


def evidence_rows(store: Store, decision: dict, text: str | None) -> list[dict]:
    """Each evidence entry of the decision with the text it stands for (a bank reference,
    or an earlier message to the same recipient) and the words it shares with `text`."""
    entries = decision.get("evidence", [])
    refs = store.references(e["reference_id"] for e in entries if e.get("reference_id") is not None)
    mine = words(text)
    rows = []
    for e in entries:
        if e.get("source") == "history":
            known = store.message(e.get("message_id") or "") or {}
            other, source = known.get("text"), f"history: message {e.get('message_id')}"
        else:
            ref = refs.get(e.get("reference_id"), {})
            other, source = ref.get("text"), ref.get("source") or "bank"
        shared = mine & words(other)
        rows.append(
            {
                **e,
                "text": other,
                "where": source,
                "segments": segments(other, shared),
                "shared": sorted(shared),
            }
        )
    return rows


def message_segments(text: str | None, evidence: list[dict]) -> list[tuple[str, bool]]:
    """The message with every word it shares with some evidence marked."""
    shared: set[str] = set()
    for row in evidence:
        shared |= set(row["shared"])
    return segments(text, shared)
