"""Cache artifacts that can prove they are whole, and are rebuilt once when they are not.

Each artifact a cache makes (an optimised graph, an int8 model, an exported
decoder) gets a small record beside it, ``<name>.record.json``: its size, its
sha256 and the mtime it had when it was made. The record is written before
the artifact is moved into place, so a reader never sees an artifact without
one. Before an artifact is used its size is compared with the record, and its
hash too once the file was touched since. One that fails the check, or that
the framework then cannot load, is removed and rebuilt in the same load, and
the caller gets a note saying so with the path: a corrupt cache entry must
neither be trusted nor make every later run pay for a silent fallback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from voxfit.errors import one_line
from voxfit.util.files import atomic_target, file_sha256, read_json, write_atomic

T = TypeVar("T")
RECORD_SUFFIX = ".record.json"
# Temporary files and scratch directories (dot-names) older than this were left by a
# process killed outright (SIGKILL, power loss); no build here takes minutes, let alone an hour.
STALE_AFTER_S = 3600


class RebuildFailed(RuntimeError):
    """A corrupt artifact was removed and could not be made again; the message says both."""


def record_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + RECORD_SUFFIX)


def publish(made: Path, path: Path) -> None:
    """Move a finished file onto ``path`` (same file system), its record written first."""
    _write_record(Path(made), Path(path))
    os.replace(made, path)  # a rename keeps the inode, so the recorded mtime stays true


@contextlib.contextmanager
def recorded_target(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to fill; moved onto ``path`` with its record
    written first when the block succeeds, removed when it fails or is interrupted."""
    path = Path(path)
    with atomic_target(path, suffix=path.suffix or ".part") as tmp:
        yield tmp
        _write_record(tmp, path)


def _write_record(made: Path, path: Path) -> None:
    st = made.stat()
    record = {"size": st.st_size, "sha256": file_sha256(None, made), "mtime_ns": st.st_mtime_ns}
    write_atomic(record_path(path), json.dumps(record, sort_keys=True).encode())


def problem(path: Path) -> Optional[str]:
    """Why the artifact at ``path`` cannot be trusted, or None when it matches its record."""
    path = Path(path)
    st = path.stat()  # OSError when there is nothing to check
    record = read_json(record_path(path))
    size, sha, mtime_ns = record.get("size"), record.get("sha256"), record.get("mtime_ns")
    if not isinstance(size, int) or not isinstance(sha, str):
        return "had no record of its size and checksum (made by an older voxfit, or the record was lost)"
    if st.st_size < size:
        return f"was corrupt (truncated: {st.st_size} of {size} bytes)"
    if st.st_size != size:
        return f"was corrupt ({st.st_size} bytes where {size} were written)"
    if st.st_mtime_ns == mtime_ns:
        return None  # untouched since it was made and checked: not worth hashing again on every start
    if file_sha256(None, path) != sha:
        return "was corrupt (its sha256 differs from the one recorded when it was made)"
    return None


def remove(path: Path) -> None:
    """Remove an artifact, then its record (a reader may meet a record alone, never an unrecorded artifact)."""
    Path(path).unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def load_or_rebuild(
    path: Path,
    what: str,
    load: Callable[[Path], T],
    build: Callable[[Path], T],
    unloadable: tuple[type[Exception], ...] = (Exception,),
) -> tuple[T, list[str]]:
    """Use the artifact at ``path`` (``load``), or make it (``build``), rebuilding it once if it is bad.

    ``build`` makes the artifact (through :func:`recorded_target` or
    :func:`publish`) and returns what ``load`` would. Returns the result and
    the notes for the user: one when the artifact was rebuilt, saying why.
    Raises :class:`RebuildFailed` when a bad artifact cannot be made again;
    a failing first build raises whatever ``build`` raised. ``unloadable``:
    the errors of ``load`` that blame the artifact (others, such as a missing
    library, propagate and leave it in place).
    """
    path = Path(path)
    try:
        why = problem(path)
    except OSError:  # not made yet, just removed by another process, or no cache to look in: make it
        return build(path), []
    if why is None:
        try:
            return load(path), []
        except unloadable as exc:  # each framework raises its own types for a file it cannot parse
            why = f"could not be loaded ({one_line(exc)})"
    with contextlib.suppress(OSError):  # a read-only cache: ``build`` meets the same and says what it does
        remove(path)
    try:
        result = build(path)
    except Exception as exc:
        raise RebuildFailed(f"{what} at {path} {why}; rebuilding it failed: {one_line(exc)}") from None
    return result, [f"{what} at {path} {why}; rebuilt"]


def sweep_stale(directory: Path, older_than_s: float = STALE_AFTER_S) -> None:
    """Remove the dot-named temporaries an outright-killed build left in a cache directory.

    Only names starting with a dot (every temporary and scratch directory a
    build makes here) and only those untouched for ``older_than_s``: a build
    running now in another process is never swept from under it.
    """
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return
    cutoff = time.time() - older_than_s
    for entry in entries:
        try:
            if not entry.name.startswith(".") or entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:
            continue  # gone already, or not ours to remove
