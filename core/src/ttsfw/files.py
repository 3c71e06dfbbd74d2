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
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

HASH_INDEX = "hashes.json"


@contextlib.contextmanager
def atomic_target(path: Path, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to fill; moved onto ``path``
    when the block succeeds, removed when it fails or is interrupted."""
    path = Path(path)
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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
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
