"""The graph ONNX Runtime optimised for this CPU is cached once and reused, with identical audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from voxfit_cpu_onnx import cache
from voxfit_cpu_onnx import piper_engine as piper_onnx
from voxfit_cpu_onnx.piper_options import PiperOptions
from voxfit_cpu_onnx.piper_spec import embedded_default

pytestmark = pytest.mark.slow
FAST_START = {"graph_optimization_level": "all", "enable_mem_reuse": False, "cache_optimized_graph": True}


def _speak(engine) -> bytes:
    # Zero noise makes VITS deterministic, so two sessions can be compared sample for sample.
    engine.configure(PiperOptions(noise_scale=0.0, noise_w_scale=0.0))
    return b"".join(chunk.pcm for chunk in engine.synthesize("The quick brown fox jumps over the lazy dog."))


def test_optimized_graph_is_made_once_and_gives_the_same_audio(tmp_path: Path) -> None:
    spec = embedded_default()
    target = cache.optimized_path(tmp_path, spec.path, "all")
    assert not target.exists()

    plain = piper_onnx.load(spec.path, spec.files["config"], 1, {"enable_mem_reuse": False})
    first = piper_onnx.load(spec.path, spec.files["config"], 1, FAST_START, target)
    assert target.exists() and target.stat().st_size > 1_000_000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    made = (target.stat().st_ino, target.stat().st_mtime_ns)

    again = piper_onnx.load(spec.path, spec.files["config"], 1, FAST_START, target)
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == made  # reused, never remade
    assert first.notes == [] and again.notes == []  # made and reused: nothing to tell the user

    reference = _speak(plain)
    assert len(reference) > 20_000
    assert _speak(first) == reference
    assert _speak(again) == reference


def test_cache_key_changes_with_the_model(tmp_path: Path) -> None:
    spec = embedded_default()
    copy = tmp_path / "voice.onnx"
    copy.write_bytes(spec.path.read_bytes()[:-1] + b"\x00")
    assert cache.optimized_path(tmp_path, spec.path, "all") != cache.optimized_path(tmp_path, copy, "all")
    assert cache.optimized_path(tmp_path, spec.path, "all") != cache.optimized_path(tmp_path, spec.path, "basic")
    assert os.path.dirname(cache.optimized_path(tmp_path, spec.path, "all")).startswith(str(tmp_path))
