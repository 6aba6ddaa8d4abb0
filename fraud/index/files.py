"""An index directory's files: reading its manifest and checking every file against it,
and writing the directory all at once, never over a user's files.

Reading. manifest.json records the format, the model, the counts and the SHA-256 of every
other file; read_manifest and verify_files refuse (DataError, one line) a directory that is
not an index, of another format, or with a file missing or changed.

Writing. An index directory holds the index's files (INDEX_FILES: index.faiss, references.jsonl,
a trained head's head.json, head.safetensors and lexical.safetensors, and manifest.json,
which records the SHA-256 of each of the others) and maybe files of the user's own: those
are no part of the index, and are never deleted or replaced. Every command that writes an
index directory (`fraud index build/add/publish/snapshot`, `train`, `calibrate`, `setup`)
writes it through write_index_dir:

Who may replace what (check_writable). A directory that holds no index file (missing,
empty, or only the user's files) may be written. So may the index that a command loaded
from that same directory, unchanged since (`index add`, `train`, `calibrate` and `index
publish` update it), and an index linked to the same bank as the one being written (a
snapshot of the bank refreshing an earlier snapshot of it). Anything else is another
index: refused in one line, unless the command was given --force.

All at once. The new directory is assembled beside the target, as `.NAME.new-XXXX` on the
same file system: the index files, fsynced, then the manifest, with the user's own files
hard-linked in (copied where a link is impossible). It then takes the target's place by
rename, as Orbax does with checkpoints (AtomicRenameTemporaryPath). rename(2) replaces
only an empty directory, so an existing target is first renamed aside (`.NAME.old-XXXX`)
and the new one renamed in: between those two renames, a few microseconds of metadata
work, NAME does not exist. A crash exactly there leaves both complete directories beside
it, and loading NAME then says which one to rename back (read_manifest);
a crash anywhere else leaves NAME as it was or as it was meant to be, plus at most a
hidden `.NAME.new-*` or `.NAME.old-*` to delete. (Linux's renameat2 with RENAME_EXCHANGE
would swap the two in one step; Python's standard library does not offer it.) The old
directory is then emptied: its index files deleted, each of the user's files deleted only
where the new directory holds the same file (its hard link, or equal content); anything
else stays there, with a warning.

A trained head belongs to its index: an update carries the head that is there (checked
against the manifest first); a new head (`fraud train`) replaces it; another index
written with --force leaves no head. A head trained on another version of the index than
the one written (`index add`, or a snapshot of a bank that changed since) is kept, and
the detector does not use it (fraud/scoring/detector.py): this logs a warning saying so.
"""

import filecmp
import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Protocol

from fraud.errors import DataError
from fraud.text.lexical import LEXICAL_WEIGHTS

log = logging.getLogger(__name__)

# 2: the manifest records the SHA-256 of index.faiss and references.jsonl;
# 3: of every file of the directory, the trained head's included, and the bank it is linked to
FORMAT_VERSION = 3
INDEX_FILE, REFERENCES_FILE, MANIFEST_FILE = "index.faiss", "references.jsonl", "manifest.json"
# A trained head's files (fraud/scoring/head.py), covered by the manifest like the rest.
HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head.json"
HEAD_FILES = (HEAD_CONFIG, HEAD_WEIGHTS, LEXICAL_WEIGHTS)
INDEX_FILES = (INDEX_FILE, REFERENCES_FILE, *HEAD_FILES, MANIFEST_FILE)


class IndexSnapshot(Protocol):
    """What write_index_dir needs of an index (fraud/index/reference_index.py)."""

    origin: tuple[Path, str] | None  # (directory, SHA-256 of its manifest) it was loaded from
    bank: dict[str, str] | None  # the bank it is linked to

    @property
    def version(self) -> str: ...

    def manifest(self) -> dict[str, Any]: ...

    def write_files(self, directory: Path) -> None: ...


class HeadFiles(Protocol):
    """What write_index_dir needs of a trained head (fraud/scoring/head.py)."""

    def write_files(self, directory: Path) -> None: ...


# -- reading: the manifest and the digests ------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an index directory; DataError, in one line saying what to do, when
    there is none or it is not JSON."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        aside = sorted(directory.parent.glob(f".{directory.name}.old-*"))
        if aside and not directory.exists():  # see replace_directory
            raise DataError(
                f"{directory}: missing: a write of it was interrupted; the index it held is "
                f"in {aside[-1]}: rename that back to {directory}"
            )
        raise DataError(
            f"{directory}: not an index directory (no {MANIFEST_FILE}): "
            "create one with `fraud index build`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not an index manifest (a JSON object)")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], names=None) -> None:
    """Refuse (DataError, one line) a directory of an older format, or whose files (all
    the manifest lists, or `names` among them) are missing or differ from their SHA-256."""
    directory = Path(directory)
    version, files = manifest.get("format_version", 1), manifest.get("files")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{directory}: an index directory of format {version}, written by a newer "
            f"version of fraud-stream (this one reads format {FORMAT_VERSION}): upgrade it"
        )
    rebuild = (
        f"rebuild it with `fraud index build --out {directory} --force` (and `fraud train` "
        "again if it had a trained head)"
    )
    if version < FORMAT_VERSION:
        raise DataError(
            f"{directory}: an index directory of format {version}, from before its manifest "
            f"covered every file (format {FORMAT_VERSION}): {rebuild}"
        )
    if not isinstance(files, dict):
        raise DataError(f"{directory}: the manifest records no file digests: {rebuild}")
    if not {INDEX_FILE, REFERENCES_FILE} <= files.keys():
        raise DataError(f"{directory / MANIFEST_FILE}: lists no {INDEX_FILE} or {REFERENCES_FILE}")
    for name in files if names is None else names:
        if sha256_file(directory / name) != files[name]:
            raise DataError(
                f"{directory / name}: its SHA-256 does not match the manifest's: the index "
                "was changed or damaged after it was written; refusing to load it (rebuild "
                "it, or restore the file)"
            )


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file of an index directory (DataError when it is missing)."""
    if not path.is_file():
        raise DataError(f"{path}: missing: the index directory is incomplete, rebuild it")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- writing ------------------------------------------------------------------------------


def index_files_in(directory: Path) -> list[str]:
    """The names of INDEX_FILES present in `directory` (none when it does not exist)."""
    return [name for name in INDEX_FILES if os.path.lexists(Path(directory) / name)]


def describe(directory: Path) -> str:
    """What the index in `directory` is, for a message: its references and version."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST_FILE).read_text())
        counts, version = manifest["counts"]["total"], manifest["index_version"]
        bank = manifest.get("bank")
        linked = f", linked to bank {bank['topic']} of cluster {bank['cluster_id']}" if bank else ""
        return f"an index of {counts} references, version {version}{linked}"
    except (OSError, ValueError, KeyError, TypeError):
        return "index files (" + ", ".join(index_files_in(directory)) + ")"


def loaded_from(directory: Path, index: IndexSnapshot | None) -> bool:
    """`index` was loaded from `directory` and the directory's manifest is unchanged."""
    if index is None or index.origin is None:
        return False
    where, digest = index.origin
    manifest = Path(directory) / MANIFEST_FILE
    return (
        Path(directory).resolve() == where
        and manifest.is_file()
        and sha256_file(manifest) == digest
    )


def linked_to(directory: Path, bank: dict[str, str] | None) -> bool:
    """`directory`'s manifest says it is linked to `bank` (topic and cluster id)."""
    if not bank:
        return False
    try:
        manifest = json.loads((Path(directory) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("bank") == bank


def check_writable(directory: Path, index: IndexSnapshot | None = None, force: bool = False):
    """Refuse (DataError, one line) to write `index` into `directory` when that would
    replace another index (the rules in the module docstring). Commands call it before
    their work, to fail early; write_index_dir calls it again before it writes."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory} exists and is not a directory: choose another path")
    if os.path.ismount(directory):
        raise DataError(
            f"{directory} is a mount point: an index directory is replaced by renaming it, "
            "so use a directory inside it"
        )
    present = index_files_in(directory)
    if not present or force:
        return
    if index is not None and index.origin is not None and index.origin[0] == directory.resolve():
        if loaded_from(directory, index):
            return
        raise DataError(
            f"{directory} changed while this command ran (another command wrote it): "
            "nothing was written; run it again"
        )
    if index is not None and linked_to(directory, index.bank):
        return
    raise DataError(
        f"{directory} already holds {describe(directory)}: refusing to replace it; "
        "choose another directory, or add --force to replace it"
    )


def write_index_dir(
    directory: Path,
    index: IndexSnapshot,
    head: HeadFiles | None = None,
    *,
    force: bool = False,
) -> None:
    """Write `index` (and a new trained `head`) as `directory`, all at once, keeping the
    user's own files there; see the module docstring for what is refused and carried."""
    # A symbolic link to the directory stays one: what is replaced is where it points.
    directory = Path(os.path.realpath(directory))
    check_writable(directory, index, force)
    keep_head = head is None and (loaded_from(directory, index) or linked_to(directory, index.bank))
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    new = parent / f".{directory.name}.new-{secrets.token_hex(4)}"
    try:
        new.mkdir()
        if directory.is_dir():
            shutil.copymode(directory, new)  # the replaced directory's permissions
        _assemble(new, directory, index, head, keep_head)
        replace_directory(new, directory)
    except OSError as e:
        raise DataError(f"could not write {directory}: {e.strerror or e}") from None
    finally:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)
    _warn_if_head_is_stale(directory, index)


def _assemble(
    new: Path, target: Path, index: IndexSnapshot, head: HeadFiles | None, keep_head: bool
) -> None:
    """Fill the new directory: index files, head files, the user's files, manifest last."""
    index.write_files(new)
    if head is not None:
        head.write_files(new)
    elif keep_head and (target / HEAD_CONFIG).exists():
        old = json.loads((target / MANIFEST_FILE).read_text())
        names = [name for name in HEAD_FILES if (target / name).exists()]
        if not set(names) <= old.get("files", {}).keys():
            raise DataError(
                f"{target}: holds head files its manifest does not cover: train the head "
                f"again (`fraud train --index {target}`) or remove them"
            )
        verify_files(target, old, names)  # never carry a damaged head into a new manifest
        for name in names:
            _link_or_copy(target / name, new / name)
    for entry in _user_entries(target):
        _carry(target / entry, new / entry)
    files = {name: sha256_file(new / name) for name in INDEX_FILES[:-1] if (new / name).exists()}
    manifest = {**index.manifest(), "files": files}
    (new / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    for name in [*files, MANIFEST_FILE]:
        _fsync(new / name)
    _fsync(new)


def replace_directory(new: Path, target: Path) -> None:
    """Rename the complete directory `new` to `target` (same parent). An existing target
    is renamed aside first, then emptied of what `new` holds too (the module docstring)."""
    parent = target.parent
    if not target.exists():
        os.rename(new, target)
        _fsync(parent)
        return
    aside = parent / f".{target.name}.old-{secrets.token_hex(4)}"
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(aside, target)
        raise
    _fsync(parent)
    try:
        _remove_replaced(aside, target)
    except OSError as e:  # the new directory is in place: what is left is only clutter
        log.warning("%s: could not remove the replaced index (%s): delete it", aside, e)


def _remove_replaced(aside: Path, target: Path) -> None:
    """Delete the replaced directory's index files, and each of its other entries that
    `target` holds too; keep anything else, with a warning."""
    for name in os.listdir(aside):
        old, now = aside / name, target / name
        if name in INDEX_FILES:
            old.unlink()
        elif _same(old, now):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
    try:
        aside.rmdir()
    except OSError:
        log.warning(
            "%s: kept, since it holds files that changed while %s was replaced: "
            "move what you need from it into %s, then delete it",
            aside,
            target,
            target,
        )


def _user_entries(directory: Path) -> list[str]:
    """The entries of `directory` that are no part of an index: the user's own."""
    if not directory.is_dir():
        return []
    return sorted(name for name in os.listdir(directory) if name not in INDEX_FILES)


def _carry(source: Path, dest: Path) -> None:
    """A user's entry into the new directory: files hard-linked (copied where linking is
    impossible), directories likewise file by file, symbolic links as links."""
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
    elif source.is_dir():
        shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy)
    elif source.is_file():
        _link_or_copy(source, dest)
    else:
        raise DataError(f"{source}: neither a file nor a directory: move it out of the index")


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _same(a: Path, b: Path) -> bool:
    """`b` holds what `a` holds: the same file (a hard link) or equal content, the same
    link target, or a directory whose entries are all the same in this sense."""
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    if a.is_dir() and b.is_dir():
        names = os.listdir(a)
        return all(_same(a / n, b / n) for n in names)
    if a.is_file() and b.is_file():
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    return False


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to the disk (rename is atomic, not durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _warn_if_head_is_stale(directory: Path, index: IndexSnapshot) -> None:
    path = directory / HEAD_CONFIG
    if not path.is_file():
        return
    trained_on = json.loads(path.read_text()).get("index_version")
    if trained_on != index.version:
        log.warning(
            "%s: the trained head was trained on index version %s, the index is now %s: "
            "the parameter-free scorer scores until `fraud train --index %s` trains it again",
            directory,
            trained_on,
            index.version,
            directory,
        )


def head_summary(directory: Path, index_version: str) -> str | None:
    """One line on the trained head of `directory` for `fraud index info`, or None."""
    path = Path(directory) / HEAD_CONFIG
    if not path.is_file():
        return None
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"trained head: {HEAD_CONFIG} unreadable"
    trained_on, threshold = meta.get("index_version"), meta.get("threshold")
    state = "in use" if trained_on == index_version else "stale: not used, train it again"
    shown = "none" if threshold is None else f"{threshold:.4f}"
    return f"trained head (index version {trained_on}, threshold {shown}): {state}"
