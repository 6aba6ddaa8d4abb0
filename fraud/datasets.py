"""Reading labeled CSV files (`text,label[,category]`) into references.

Public datasets label differently (`ham`/`spam`, `0`/`1`), so the reader takes a label
mapping instead of asking anyone to rewrite files. Every problem is one DataError line.
"""

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fraud.errors import DataError

DEFAULT_FRAUD_LABELS = ("fraud", "spam", "smishing", "scam")
DEFAULT_LEGIT_LABELS = ("legit", "ham")
UNSPECIFIED_CATEGORY = "unspecified"


@dataclass(frozen=True)
class LabeledText:
    text: str
    label: str  # "fraud" or "legit"
    category: str | None  # None for legit; UNSPECIFIED_CATEGORY for fraud without one


def parse_label_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """'spam, Smishing' -> ('spam', 'smishing')."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(s.strip().lower() for s in items if s.strip())


def read_labeled_csv(
    path: Path,
    fraud_labels: Iterable[str] = DEFAULT_FRAUD_LABELS,
    legit_labels: Iterable[str] = DEFAULT_LEGIT_LABELS,
) -> list[LabeledText]:
    """Read a CSV with a header naming `text` and `label` (and optionally `category`)."""
    fraud, legit = set(parse_label_list(fraud_labels)), set(parse_label_list(legit_labels))
    if overlap := fraud & legit:
        raise DataError(f"labels {sorted(overlap)} are listed as both fraud and legit")
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "text" not in columns or "label" not in columns:
                raise DataError(
                    f"{path}: expected a header with columns text,label[,category], "
                    f"found {reader.fieldnames or 'no header'}"
                )
            reader.fieldnames = columns
            rows = []
            for row in reader:
                rows.append(_to_labeled(row, path, reader.line_num, fraud, legit))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _to_labeled(
    row: dict[str, str | None], path: Path, line: int, fraud: set[str], legit: set[str]
) -> LabeledText:
    text, raw_label = row.get("text"), (row.get("label") or "").strip().lower()
    if text is None or not text.strip():
        raise DataError(f"{path}:{line}: empty text")
    if raw_label in fraud:
        category = (row.get("category") or "").strip().lower() or UNSPECIFIED_CATEGORY
        return LabeledText(text=text, label="fraud", category=category)
    if raw_label in legit:
        return LabeledText(text=text, label="legit", category=None)
    raise DataError(
        f"{path}:{line}: label {raw_label!r} is neither fraud {sorted(fraud)} "
        f"nor legit {sorted(legit)}: pass --fraud-labels/--legit-labels"
    )
