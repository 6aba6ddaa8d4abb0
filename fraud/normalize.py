"""Text normalization, applied identically to references and to scored messages.

Bump NORMALIZATION_VERSION whenever the output of `normalize` changes for any input:
index manifests record it and an index built under another version is refused.
"""

import re
import unicodedata

NORMALIZATION_VERSION = 1

# Zero-width characters used to split words invisibly ("pa\u200bypal"), plus the BOM.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u180e\ufeff"), None)
_WHITESPACE = re.compile(r"\s+")


def _is_control(ch: str) -> bool:
    # Cc = control, Cf = format (bidi overrides, soft hyphen...). Whitespace is kept
    # here and collapsed below, so "line1\nline2" stays two words.
    return unicodedata.category(ch) in ("Cc", "Cf") and not ch.isspace()


def normalize(text: str) -> str:
    """Zero-width and control characters removed, NFKC, whitespace collapsed and trimmed.

    Removal comes before NFKC so that characters the removal brings together (a letter
    and a combining accent split by a zero-width space) are composed too, which keeps
    normalize idempotent.
    """
    text = "".join(ch for ch in text.translate(_ZERO_WIDTH) if not _is_control(ch))
    text = unicodedata.normalize("NFKC", text)
    return _WHITESPACE.sub(" ", text).strip()
