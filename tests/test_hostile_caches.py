"""The cpu_onnx caches under hostile conditions: a read-only voice directory, two builds at once,
corrupt entries, an interrupted quantization, a cache that cannot be written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from voxfit.errors import EngineLoadError
from voxfit.planning import measurements as tuning
from voxfit.planning.cpu_load import without_load
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import load_settings
from voxfit.speaking import load as runtime
from voxfit.util import artifacts
from voxfit.util.files import file_sha256
from voxfit_cpu_onnx import cache
from voxfit_cpu_onnx import piper_spec as piper

QUINT8 = "int8-dynamic-quint8"


def _snapshot(directory: Path) -> tuple:
    """What a read-only directory must keep: its names, each entry's size and mtime, its own mtime
    (a file created and removed again, like quantize_dynamic's ``-inferred.onnx``, changes that)."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir())
    return directory.stat().st_mtime_ns, entries


def _scratch_left(cache_dir: Path) -> list[str]:
    return [p.name for p in cache_dir.rglob(".*")]


@pytest.fixture
def voice_copy(tmp_path: Path):
    """The embedded voice copied into a directory made read-only (0555); the tests run as root,
    so they also compare the directory before and after."""
    voice_dir = tmp_path / "voice"
    voice_dir.mkdir()
    source = piper.embedded_default()
    for path in (source.files["model"], source.files["config"]):
        shutil.copy2(path, voice_dir / path.name)
    voice_dir.chmod(0o555)
    yield piper.read(voice_dir)
    voice_dir.chmod(0o755)


def _plan(cache_dir: Path, model, prefer: str | None = None):
    """A plan for ``model`` from the cpu_onnx plugin; ``prefer`` a variant measured fastest, so it is chosen."""
    settings = load_settings(cache_dir=str(cache_dir), allow_plugins=["cpu_onnx"])
    host = PluginHost.from_entry_points(settings)
    plan = make_plan(host, model=model)
    if prefer and plan.chosen.options.variant != prefer:
        # Measurements are keyed by the proposals for the quiet machine (threads are fitted to the
        # current load afterwards), as `voxfit tune` records them.
        quiet = make_plan(host, model=model, hardware=plan.hardware.model_copy(
            update={"flags": without_load(plan.hardware.flags)}))
        versions = tuning.module_versions(["onnxruntime", "piper-tts"])
        entries = {tuning.proposal_key(p): {"rtf": 0.01 if p.options.variant == prefer else 0.05,
                                            "versions": versions}
                   for p in quiet.ranked() if p.engine == "piper-onnx"}
        tuning.save(settings.cache_dir, plan.hardware, plan.model, entries)
        plan = make_plan(host, model=model)
    assert plan.chosen.options.variant == (prefer or "fp32-fast-start")
    return host, plan


def _run(cache_dir: Path, model, variant: str) -> list[str]:
    """Load the plan's choice as `voxfit run` does, check it is that choice and that it speaks; its notes."""
    host, plan = _plan(cache_dir, model, prefer=variant)
    loaded = runtime.load(host, plan)
    try:
        assert not loaded.fell_back, [a.reason for a in loaded.attempts]
        assert loaded.proposal.options.variant == variant
        pcm = b"".join(chunk.pcm for chunk in loaded.engine.synthesize("A cache can go bad."))
        assert len(pcm) > 22050  # more than half a second of audio
        return list(loaded.engine.notes)
    finally:
        loaded.engine.close()


# -- 1. quantization never writes beside the voice --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8-quint8", "int8-qint8"])
def test_int8_proposals_load_from_a_read_only_voice_directory(tmp_path: Path, voice_copy, variant: str) -> None:
    cache_dir = tmp_path / "cache"
    before = _snapshot(voice_copy.path.parent)
    notes = _run(cache_dir, voice_copy, variant)
    assert _snapshot(voice_copy.path.parent) == before  # nothing written there, not even for a moment
    assert notes == []
    quantized = list((cache_dir / "cpu_onnx" / "quantized").glob("*.onnx"))
    assert len(quantized) == 1 and artifacts.problem(quantized[0]) is None
    assert _scratch_left(cache_dir) == []


_QUANTIZE = """
import sys
from pathlib import Path
from voxfit_cpu_onnx import cache
print(cache.ensure_quantized(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
"""


@pytest.mark.slow
def test_two_processes_quantizing_the_same_voice_at_once_both_succeed(tmp_path: Path, voice_copy) -> None:
    onnx = pytest.importorskip("onnx")
    cache_dir = tmp_path / "cache"
    before = _snapshot(voice_copy.path.parent)
    # Hash the voice first, as a plan does, so both processes go straight to quantizing.
    file_sha256(cache_dir, voice_copy.path)
    procs = [
        subprocess.Popen([sys.executable, "-c", _QUANTIZE, str(cache_dir), str(voice_copy.path), QUINT8],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    paths = {out.decode().strip() for out, _ in results}
    assert len(paths) == 1
    target = Path(paths.pop())
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, target.name + ".record.json"])
    assert artifacts.problem(target) is None
    onnx.checker.check_model(str(target))
    assert _snapshot(voice_copy.path.parent) == before
    assert _scratch_left(cache_dir) == []


_INTERRUPTED = """
import signal, sys
from pathlib import Path

class Terminated(Exception):
    pass

def on_sigterm(signum, frame):  # what the CLI does with SIGTERM: an exception, so `finally` blocks run
    raise Terminated()

signal.signal(signal.SIGTERM, on_sigterm)
from voxfit_cpu_onnx import cache
try:
    cache.ensure_quantized(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
except Terminated:
    sys.exit(143)
sys.exit(0)
"""


@pytest.mark.slow
def test_a_quantization_stopped_by_sigterm_leaves_no_scratch_and_no_entry(tmp_path: Path, voice_copy) -> None:
    cache_dir = tmp_path / "cache"
    quantized_dir = cache_dir / "cpu_onnx" / "quantized"
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(cache_dir), str(voice_copy.path), QUINT8],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (quantized_dir.is_dir() and any(quantized_dir.glob(".scratch-*"))):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the quantization never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the quantization finished before SIGTERM arrived")  # a very fast machine
    assert proc.returncode == 143, err.decode()[-2000:]
    assert list(quantized_dir.iterdir()) == []  # no scratch directory, no half entry, no record


def test_a_failed_quantization_leaves_no_scratch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    not_onnx = tmp_path / "voice.onnx"
    not_onnx.write_bytes(b"\x08\x07" + b"not a model" * 200)
    target = tmp_path / "cache" / "q.onnx"
    with pytest.raises(Exception, match="Unable to parse proto"):  # onnx's own ValidationError
        cache.quantize(not_onnx, QUINT8, target)
    assert list(target.parent.iterdir()) == []


def test_stale_temporaries_of_a_killed_build_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    old_dir, old_file, fresh_dir = tmp_path / ".scratch-old", tmp_path / ".q.onnx.abc.onnx", tmp_path / ".scratch-now"
    for d in (old_dir, fresh_dir):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x")
    old_file.write_bytes(b"x")
    entry = tmp_path / "q.onnx"
    entry.write_bytes(b"x")
    two_hours_ago = time.time() - 2 * 3600
    for path in (old_dir, old_file, entry):
        os.utime(path, (two_hours_ago, two_hours_ago))
    artifacts.sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scratch-now", "q.onnx"]


# -- 2. a corrupt cache entry is detected, named and rebuilt once ----------------------------


def _optimized_graph(cache_dir: Path, model) -> Path:
    return cache.optimized_path(cache_dir, model.path, "all")


def _int8_model(cache_dir: Path, model) -> Path:
    return cache.quantized_path(cache_dir, file_sha256(cache_dir, model.path), QUINT8)


ARTIFACTS = {
    "optimised graph": ("fp32-fast-start", _optimized_graph, "cached optimised graph"),
    "int8 model": ("int8-quint8", _int8_model, "cached int8 model (QUInt8)"),
}


def _truncate(path: Path) -> str:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 3)
    return f"truncated: {size // 3} of {size} bytes"


def _fill_with_garbage(path: Path) -> str:
    path.write_bytes(os.urandom(path.stat().st_size))
    return "sha256 differs"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [_truncate, _fill_with_garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_a_corrupt_cache_entry_is_rebuilt_once_and_said(tmp_path: Path, artifact: str, corrupt) -> None:
    variant, locate, what = ARTIFACTS[artifact]
    model = piper.embedded_default()
    cache_dir = tmp_path / "cache"
    assert _run(cache_dir, model, variant) == []  # first run: made
    path = locate(cache_dir, model)
    fresh_size = path.stat().st_size

    damage = corrupt(path)
    notes = _run(cache_dir, model, variant)  # the proposal that was chosen loads; nothing falls back
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"{what} at {path} was corrupt (") and notes[0].endswith("; rebuilt")
    assert damage in notes[0]
    assert path.stat().st_size == fresh_size and artifacts.problem(path) is None
    made = (path.stat().st_ino, path.stat().st_mtime_ns)

    assert _run(cache_dir, model, variant) == []  # the rebuilt entry is used as it is
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == made
    assert _scratch_left(cache_dir) == []


@pytest.mark.slow
def test_damage_that_kept_the_mtime_is_caught_when_the_graph_does_not_load(tmp_path: Path) -> None:
    # Bit rot keeps size and mtime, so the record's cheap check passes; the load fails and that is enough.
    model = piper.embedded_default()
    cache_dir = tmp_path / "cache"
    _run(cache_dir, model, "fp32-fast-start")
    path = _optimized_graph(cache_dir, model)
    st = path.stat()
    path.write_bytes(os.urandom(st.st_size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert artifacts.problem(path) is None
    notes = _run(cache_dir, model, "fp32-fast-start")
    assert len(notes) == 1 and notes[0].startswith(f"cached optimised graph at {path} could not be loaded (")
    assert path.stat().st_size == st.st_size and _run(cache_dir, model, "fp32-fast-start") == []


@pytest.mark.slow
def test_an_optimised_graph_that_cannot_be_cached_is_made_in_memory_and_said(tmp_path: Path) -> None:
    model = piper.embedded_default()
    cache_dir = tmp_path / "cache"
    blocked = cache_dir / "cpu_onnx" / "optimized"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the cache wants a directory")  # fails for root as well as anyone
    notes = _run(cache_dir, model, "fp32-fast-start")
    assert len(notes) == 1 and notes[0].startswith("could not cache the optimised graph at ")
    assert notes[0].endswith("optimised in memory")


@pytest.mark.slow
def test_a_failure_that_is_not_the_cache_entrys_fault_leaves_the_entry_alone(tmp_path: Path, voice_copy) -> None:
    cache_dir = tmp_path / "cache"
    _run(cache_dir, voice_copy, "int8-quint8")
    path = _int8_model(cache_dir, voice_copy)
    made = (path.stat().st_ino, path.stat().st_mtime_ns)
    voice_copy.files["config"].write_text("{ broken")  # after planning: only the load meets it
    host, plan = _plan(cache_dir, voice_copy, prefer="int8-quint8")
    with pytest.raises(EngineLoadError) as failed:
        runtime.load_proposal(host, plan, plan.chosen, [])
    assert str(failed.value).startswith(f"voice config {voice_copy.files['config']} is not valid JSON")
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == made and artifacts.problem(path) is None


# -- the shared mechanism itself -------------------------------------------------------


def _made(path: Path, data: bytes) -> None:
    with artifacts.recorded_target(path) as tmp:
        tmp.write_bytes(data)


def test_the_record_tells_a_whole_artifact_from_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "thing.onnx"
    _made(path, b"0123456789")
    assert artifacts.problem(path) is None
    path.write_bytes(b"0123")
    assert artifacts.problem(path) == "was corrupt (truncated: 4 of 10 bytes)"
    path.write_bytes(b"0123456789AB")
    assert artifacts.problem(path) == "was corrupt (12 bytes where 10 were written)"
    path.write_bytes(b"9876543210")
    assert "sha256 differs" in artifacts.problem(path)
    path.write_bytes(b"0123456789")  # the same bytes again, only touched
    assert artifacts.problem(path) is None
    artifacts.record_path(path).unlink()
    assert artifacts.problem(path).startswith("had no record of its size and checksum")


def test_a_bad_artifact_whose_rebuild_fails_gives_both_reasons(tmp_path: Path) -> None:
    path = tmp_path / "thing.onnx"
    _made(path, b"0123456789")
    path.write_bytes(b"01")

    def build(target: Path) -> bytes:
        raise RuntimeError("the source model is gone")

    with pytest.raises(artifacts.RebuildFailed) as failed:
        artifacts.load_or_rebuild(path, "cached thing", Path.read_bytes, build)
    assert str(failed.value) == (
        f"cached thing at {path} was corrupt (truncated: 2 of 10 bytes); "
        "rebuilding it failed: RuntimeError: the source model is gone"
    )
    assert not path.exists() and not artifacts.record_path(path).exists()  # never trusted again


def test_an_artifact_without_a_record_is_rebuilt_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "thing.onnx"
    path.write_bytes(b"made by an older voxfit")

    def build(target: Path) -> bytes:
        _made(target, b"fresh")
        return target.read_bytes()

    result, notes = artifacts.load_or_rebuild(path, "cached thing", Path.read_bytes, build)
    assert result == b"fresh" and artifacts.problem(path) is None
    assert notes == [f"cached thing at {path} had no record of its size and checksum "
                     "(made by an older voxfit, or the record was lost); rebuilt"]
    assert artifacts.load_or_rebuild(path, "cached thing", Path.read_bytes, build) == (b"fresh", [])
