"""The shipped default detector: the seed set + UCI as references, with a trained head.

Why the head is shipped rather than trained at install. `fraud train` with its inner
cross-validation takes about 8 minutes on 2 cores for these ~6,000 references: too slow
for a first `fraud demo`. So the head and the thresholds are fitted once, by one project
command (`fraud index fit-default`, which runs `fraud calibrate` and `fraud train`'s own
functions with a target false-positive rate of 1%), and committed in fraud/data/default_head/
with a provenance.json that records that command, the SHA-256 of every input file and of
every head file, the model, and the index version it was trained on. A build then only
embeds the references (about a minute) and attaches the shipped head.

Why attaching it is honest. A head is used only with the index version it was trained
on (fraud/scoring/detector.py). That version is a hash of the model's name, dimension,
the normalization version and the references themselves (ids, texts, labels, categories,
sources; fraud/index/reference_index.py), not of the float embeddings. Built from the same
package files, in the same order (fraud.data.DEFAULT_REFERENCE_SOURCES), with the same
model, the index has the very version the head was trained on, and the head's files are
checked against their recorded digests. Built with another model (`--model english`), or
from changed files, the version differs: then no head and none of the shipped parameters
are attached, and the build says so (the parameter-free scorer, as for any index).

The first build is cached under a directory keyed by everything it depends on (the input
files' and head files' digests, the model, the normalization and index formats, the
scorer settings), so a second `fraud index build` or `fraud demo` only copies it.
"""

import hashlib
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraud.config import ScorerSettings
from fraud.data import DEFAULT_REFERENCE_SOURCES, default_head_dir
from fraud.datasets import read_labeled_csv
from fraud.encoding.base import TextEncoder
from fraud.errors import DataError
from fraud.fitting.commands import calibrate, train
from fraud.index.build import embed_into
from fraud.index.files import (
    FORMAT_VERSION,
    HEAD_CONFIG,
    HEAD_FILES,
    MANIFEST_FILE,
    sha256_file,
    write_index_dir,
)
from fraud.index.reference_index import ReferenceIndex
from fraud.scoring.head import HeadConfig
from fraud.text.normalize import NORMALIZATION_VERSION

log = logging.getLogger(__name__)

TARGET_FPR = 0.01  # the default's alert thresholds: 1% false positives, out of fold
PROVENANCE = "provenance.json"
# Where `fraud index build` (without --csv) and `fraud demo` keep their one build of the
# default, beside the default index directory and the model cache.
DEFAULT_CACHE = Path(".cache/default-index")


def input_digests() -> dict[str, str]:
    """The SHA-256 of each reference file of the default, by file name."""
    return {path.name: sha256_file(path) for _, path in DEFAULT_REFERENCE_SOURCES}


def default_index(encoder: TextEncoder, scorer: dict[str, Any], progress: bool) -> ReferenceIndex:
    """The default's references, embedded, in their fixed order (no head)."""
    index = ReferenceIndex(encoder.name, encoder.dim, scorer)
    for source, path in DEFAULT_REFERENCE_SOURCES:
        embed_into(index, encoder, read_labeled_csv(path), source, progress)
    return index


def fit_default(
    encoder: TextEncoder,
    scorer: dict[str, Any],
    work_dir: Path,
    out_dir: Path,
    command: str,
    **head_config: Any,
) -> dict[str, Any]:
    """Build the default index in `work_dir` (empty or missing), fit its scorer parameters
    (`fraud calibrate --target-fpr 0.01`) and train its head (`fraud train --target-fpr
    0.01`; `head_config`: HeadConfig fields other than the defaults, for small tests), then
    write the head's files and provenance.json into `out_dir`."""
    rule = {"target_fpr": TARGET_FPR}
    index = default_index(encoder, scorer, progress=True)
    index.save(work_dir)
    index = ReferenceIndex.load(work_dir, model=encoder.name, dim=encoder.dim)
    calibrated = calibrate(index, work_dir, scorer["top_k"], rule, fit_ngram=True)
    log.info("calibrated the parameter-free scorer: %s", calibrated)
    index = ReferenceIndex.load(work_dir, model=encoder.name, dim=encoder.dim)
    config = HeadConfig(dim=index.dim, n_categories=len(index.categories), **head_config)
    trained = train(index, work_dir, config, rule, fit_ngram=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [name for name in HEAD_FILES if (work_dir / name).exists()]
    for name in names:
        shutil.copyfile(work_dir / name, out_dir / name)
    provenance = {
        "command": command,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "inputs": input_digests(),
        "model": encoder.name,
        "dim": encoder.dim,
        "normalization_version": NORMALIZATION_VERSION,
        "index_version": index.version,
        "counts": index.counts(),
        "target_fpr": TARGET_FPR,
        "scorer": index.scorer_params,  # the parameter-free scorer's, calibrated
        "head": {**trained, "threshold": round(trained["threshold"], 6)},
        "files": {name: sha256_file(out_dir / name) for name in names},
    }
    (out_dir / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def read_provenance(directory: Path | None = None) -> dict[str, Any]:
    """The shipped head's provenance.json (DataError, one line, when it is missing)."""
    path = (directory or default_head_dir()) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: the default detector's head is missing or unreadable ({e}): "
            "reinstall fraud-stream, or run `fraud index fit-default`"
        ) from None


@dataclass(frozen=True)
class ShippedHead:
    """The committed head files, copied into an index directory being written
    (write_index_dir's HeadFiles), each checked against its recorded digest first."""

    directory: Path
    digests: dict[str, str]

    def write_files(self, directory: Path) -> None:
        for name, digest in self.digests.items():
            if sha256_file(self.directory / name) != digest:
                raise DataError(
                    f"{self.directory / name}: does not match the SHA-256 in {PROVENANCE}: "
                    "the shipped head was changed; reinstall fraud-stream"
                )
            shutil.copyfile(self.directory / name, Path(directory) / name)


def cache_key(encoder: TextEncoder, scorer: dict[str, Any], provenance: dict[str, Any]) -> str:
    """What a cached default build depends on, hashed: the input files, the head files,
    the model and what its embeddings depend on (the encoder's cache_key: its variant,
    and torch-bf16's packing), the formats and the scorer parameters set explicitly."""
    parts = {
        "inputs": input_digests(),
        "head": provenance.get("files"),
        "model": getattr(encoder, "cache_key", encoder.name),
        "dim": encoder.dim,
        "normalization": NORMALIZATION_VERSION,
        "format": FORMAT_VERSION,
        "scorer": scorer,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_default(
    encoder: TextEncoder,
    overrides: dict[str, Any],
    progress: bool,
    cache_root: Path = DEFAULT_CACHE,
) -> tuple[Path, str | None]:
    """(the directory of the default index, built once into `cache_root` and reused;
    None, or why the shipped head was not attached). `overrides`: scorer parameters the
    user set explicitly, recorded over the shipped ones (ScorerSettings' defaults else)."""
    provenance = read_provenance()
    cached = Path(cache_root) / f"default-{cache_key(encoder, overrides, provenance)}"
    if (cached / MANIFEST_FILE).is_file():
        return cached, _why_not_attached(cached)
    index = default_index(encoder, ScorerSettings().model_dump(), progress)
    why_not = _mismatch(index, provenance)
    head = None
    if why_not is None:
        index.scorer_params.update(provenance["scorer"])
        head = ShippedHead(default_head_dir(), provenance["files"])
    else:
        log.warning("the default detector's shipped head is not attached: %s", why_not)
    index.scorer_params.update(overrides)
    write_index_dir(cached, index, head, force=True)  # the cache's own, content-keyed
    return cached, why_not


def _mismatch(index: ReferenceIndex, provenance: dict[str, Any]) -> str | None:
    """Why the shipped head does not belong to `index` (None when it does)."""
    if index.version != provenance.get("index_version"):
        return (
            f"it was trained on index version {provenance.get('index_version')} (model "
            f"{provenance.get('model')}), this build is version {index.version} (model "
            f"{index.model}): the parameter-free scorer scores; `fraud train` fits a head"
        )
    return None


def _why_not_attached(cached: Path) -> str | None:
    """For a cached build: None when it holds the shipped head, else why not."""
    if (cached / HEAD_CONFIG).is_file():
        return None
    return "the shipped head was trained with another model or other references"
