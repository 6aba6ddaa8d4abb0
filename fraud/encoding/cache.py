"""An on-disk cache of embeddings, keyed by model (and variant), normalization version and text.

Re-running an evaluation or a parameter sweep then does not re-encode. SQLite, one row
per text: (sha256 key, float32 bytes). No pickle.
"""

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fraud.text.normalize import NORMALIZATION_VERSION


class CachedEncoder:
    """Wraps an encoder (anything with .name, .dim, .encode) with a persistent cache."""

    def __init__(self, encoder, cache_dir: Path) -> None:
        self.encoder, self.name, self.dim = encoder, encoder.name, encoder.dim
        self._identity = getattr(encoder, "cache_key", encoder.name)
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(cache_dir / "embeddings.sqlite3")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self.hits = self.misses = 0

    def _key(self, text: str) -> str:
        raw = f"{self._identity}\x00{self.dim}\x00{NORMALIZATION_VERSION}\x00{text}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):  # SQLite's variable limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk)  # noqa: S608
            )
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = self.encoder.encode([text_of[k] for k in missing], progress)
            rows = [
                (k, v.astype(np.float32).tobytes()) for k, v in zip(missing, vectors, strict=True)
            ]
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", rows)
            self._db.commit()
            found.update(rows)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        out = np.frombuffer(b"".join(found[k] for k in keys), dtype=np.float32)
        return out.reshape(len(keys), self.dim).copy()

    def close(self) -> None:
        self._db.close()
