"""Building an index from labeled texts: encode them (with a progress bar when asked) and
add them, skipping texts the index already holds."""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from fraud.datasets import LabeledText
from fraud.encoding.base import TextEncoder
from fraud.index.reference_index import ReferenceIndex
from fraud.index.spec import IndexSpec
from fraud.text.normalize import normalize

log = logging.getLogger(__name__)


def embed_into(
    index: ReferenceIndex,
    encoder: TextEncoder,
    items: Sequence[LabeledText],
    source: str,
    progress: bool,
) -> list[int]:
    """Encode `items` (with a progress bar when asked) and add them to `index`.

    A text already in the index, or earlier in `items`, after normalization, is skipped:
    a duplicate reference adds nothing to search and would be its own twin's key when
    the scorer is fitted on the index.
    """
    seen = {normalize(ref.text) for ref in index.references()}
    fresh = []
    for item in items:
        key = normalize(item.text)
        if key not in seen:
            seen.add(key)
            fresh.append(item)
    if len(fresh) < len(items):
        log.info("skipped %d duplicate texts", len(items) - len(fresh))
    if not fresh:
        return []
    vectors = encode_with_progress(encoder, [item.text for item in fresh], progress)
    return index.add(fresh, vectors, source, progress=progress)


def build_index(
    encoder: TextEncoder,
    items: Sequence[LabeledText],
    source: str,
    scorer: dict[str, Any],
    progress: bool,
    index_spec: IndexSpec | None = None,
) -> ReferenceIndex:
    """A new index for `encoder` holding `items`, recording the scorer parameters and the
    index type (default: flat)."""
    index = ReferenceIndex(encoder.name, encoder.dim, scorer, index_spec)
    embed_into(index, encoder, items, source, progress)
    return index


def encode_with_progress(encoder: TextEncoder, texts: list[str], progress: bool) -> np.ndarray:
    """encoder.encode(texts), with a progress bar on the terminal when asked."""
    with tqdm(total=len(texts), unit="msg", desc="encoding", disable=not progress) as bar:
        return encoder.encode(texts, progress=bar.update)
