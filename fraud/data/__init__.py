"""Data shipped inside the package: the team's seed references, the demo messages, the UCI
SMS Spam Collection, the default detector's trained head and the adapted encoder's delta.

The default detector's references are the seed set (its Chinese rows included) plus the
UCI SMS Spam Collection (CC BY 4.0; attribution and licence in sms_spam_uci.NOTICE.md).
UCI is shipped as a copy rather than built from a path at install time: the default must
build offline, from the package's own files, with no file the user has to find first, and
its trained head (default_head/) is tied to exactly these references (their digests are in
its provenance.json), which a user-supplied path could not guarantee. CC BY 4.0 allows
redistribution with attribution. The Chinese public set is not shipped (no licence).
"""

from pathlib import Path

__all__ = [
    "DEFAULT_REFERENCE_SOURCES",
    "adapted_encoder_dir",
    "default_head_dir",
    "demo_messages_path",
    "seed_references_path",
    "uci_sms_spam_path",
]

DATA_DIR = Path(__file__).resolve().parent


def seed_references_path() -> Path:
    """The seed reference set the team wrote (text,label,category)."""
    return DATA_DIR / "seed_references.csv"


def demo_messages_path() -> Path:
    """The demo's messages, one JSON object a line (none of them in the seed set)."""
    return DATA_DIR / "demo_messages.jsonl"


def uci_sms_spam_path() -> Path:
    """The UCI SMS Spam Collection v.1 (label,text: ham/spam), CC BY 4.0."""
    return DATA_DIR / "sms_spam_uci.csv"


def adapted_encoder_dir() -> Path:
    """The adapted English encoder's delta over the bundled model (fraud/encoding/bundled.py)."""
    return DATA_DIR / "adapted_encoder"


def default_head_dir() -> Path:
    """The default detector's trained head and its provenance (fraud/fitting/default.py)."""
    return DATA_DIR / "default_head"


# The default detector's references, in the order they are added (the index version, to
# which the shipped head is tied, depends on it): (source recorded with them, file).
DEFAULT_REFERENCE_SOURCES: tuple[tuple[str, Path], ...] = (
    ("seed", seed_references_path()),
    ("uci-sms-spam", uci_sms_spam_path()),
)
