"""The cache helpers: nothing half-written is ever seen, and a file is hashed once per version."""

import hashlib
import os

import pytest
from voxfit.util.files import HASH_INDEX, atomic_target, file_sha256, read_json


def test_atomic_target_moves_into_place_only_on_success(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic_target(target, ".onnx") as tmp:
        tmp.write_bytes(b"complete")
        assert not target.exists()
    assert target.read_bytes() == b"complete"
    with pytest.raises(KeyboardInterrupt):
        with atomic_target(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete"  # the old version survives an interrupted rewrite
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]  # no temporary left


def test_file_hash_is_remembered_per_version(tmp_path):
    cache, data = tmp_path / "cache", tmp_path / "weights.bin"
    data.write_bytes(b"x" * 10_000)
    first = file_sha256(cache, data)
    assert first == hashlib.sha256(b"x" * 10_000).hexdigest()
    index = read_json(cache / HASH_INDEX)
    [(key, value)] = index.items()
    assert value == first and str(data.resolve()) in key
    # A remembered hash is used as long as path, size and mtime match...
    (cache / HASH_INDEX).write_text(f'{{"{key}": "remembered"}}')
    assert file_sha256(cache, data) == "remembered"
    # ...and a new version of the file is hashed again.
    data.write_bytes(b"y" * 10_000)
    os.utime(data, ns=(1, 1))
    assert file_sha256(cache, data) == hashlib.sha256(b"y" * 10_000).hexdigest()
    assert file_sha256(None, data) == hashlib.sha256(b"y" * 10_000).hexdigest()  # no cache: just the hash
