"""Small file helpers every cache shares: atomic writes and remembered file hashes.

Nothing a cache writes may be seen half-written (an interrupted export or
quantization would otherwise be trusted next time), and a multi-gigabyte
checkpoint is hashed once per version, not on every plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

HASH_INDEX = "hashes.json"

#: Largest small file (settings, profiles, configs, JSON caches) voxfit reads whole.
#: These are kilobytes in practice; the bound keeps ``--hardware /dev/zero`` or a
#: huge file named by mistake from reading until memory runs out.
SMALL_FILE_LIMIT = 8 * 2**20


class FileTooLarge(ValueError):
    """A small file was larger than the bound it is read with."""


def read_small_bytes(path: Path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a small file, reading at most ``limit`` + 1 bytes of it.

    Raises :class:`FileTooLarge` past the bound (endless devices included) and
    ``OSError`` as ``open`` does; callers turn both into their one-line message.
    """
    with Path(path).open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{path} is larger than {limit // 2**20} MiB; expected a small text file")
    return data


def read_small_text(path: Path, limit: int = SMALL_FILE_LIMIT) -> str:
    """:func:`read_small_bytes` decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
    return read_small_bytes(path, limit).decode("utf-8")


class NotAFile(OSError):
    """The path names something a rename must not replace (a device, a FIFO, a directory...)."""


def replaceable_path(path: Path) -> Path:
    """The path a finished temporary file may be renamed onto in place of ``path``.

    A rename replaces whatever the name points at, so only a new name or a
    regular file may be its target: renaming over ``/dev/null`` (as root) would
    turn the device node into a plain file. A symbolic link is followed to the
    file it names, so the link survives and keeps pointing at the new contents.
    Raises :class:`NotAFile` for anything else.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # a dangling link creates the file it names, as open() would
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path  # new (or unreachable, which creating the temporary file reports)
    if not stat.S_ISREG(mode):
        raise NotAFile(f"{path} exists and is not a regular file")
    return path


@contextlib.contextmanager
def atomic_target(path: Path, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to fill; moved onto ``path``
    when the block succeeds, removed when it fails or is interrupted (SIGTERM
    included, see :mod:`voxfit.util.signals`). ``path`` must be new, a regular file or a
    link to one (:func:`replaceable_path`); anything else raises :class:`NotAFile`."""
    path = replaceable_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


class UnreadableFile(ValueError):
    """A small file the user named could not be read; ``str()`` says why, as a phrase to follow its name."""


def load_small_text(path: Path, limit: int = SMALL_FILE_LIMIT) -> str:
    """:func:`read_small_text`, with every way it can fail raised as :class:`UnreadableFile`.

    For files the user named or placed (profiles, configs, ``.env``): the
    caller puts what the file is in front, e.g. ``f"hardware profile {path} {exc}"``.
    """
    try:
        return read_small_text(path, limit)
    except FileNotFoundError:
        raise UnreadableFile("not found") from None
    except IsADirectoryError:
        raise UnreadableFile("is a directory, not a file") from None
    except PermissionError:
        raise UnreadableFile("is not readable (permission denied)") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot be read: {exc.strerror or exc}") from None
    except FileTooLarge:
        raise UnreadableFile(f"is larger than {limit // 2**20} MiB (expected a few kilobytes of text)") from None
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None


def load_small_json(path: Path, limit: int = SMALL_FILE_LIMIT) -> Any:
    """The parsed JSON of a small file; :class:`UnreadableFile` for every way it can fail."""
    text = load_small_text(path, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:  # [[[[...]]]] deeper than the interpreter's stack
        raise UnreadableFile("is not JSON voxfit can read: nested too deeply") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when it is missing, unreadable, too large, too deep or not an object."""
    try:
        data = load_small_json(path)
    except UnreadableFile:
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(cache_dir: Optional[Path], path: Path) -> str:
    """sha256 of a file; with a cache directory, remembered by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    index_path = Path(cache_dir) / HASH_INDEX if cache_dir is not None else None
    index = read_json(index_path) if index_path else {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if index_path is not None:
        index[key] = digest.hexdigest()
        try:
            write_atomic(index_path, json.dumps(index, indent=1, sort_keys=True).encode())
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return digest.hexdigest()
