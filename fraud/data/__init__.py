"""Data shipped inside the package: the team's seed references and the demo messages."""

from pathlib import Path

__all__ = ["demo_messages_path", "seed_references_path"]

DATA_DIR = Path(__file__).resolve().parent


def seed_references_path() -> Path:
    """The seed reference set the team wrote (text,label,category)."""
    return DATA_DIR / "seed_references.csv"


def demo_messages_path() -> Path:
    """The demo's messages, one JSON object a line (none of them in the seed set)."""
    return DATA_DIR / "demo_messages.jsonl"
