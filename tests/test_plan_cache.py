"""The plan cache: what invalidates a cached plan, the memory recheck, and a reused plan that loads nothing heavy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from voxfit import plan_cache
from voxfit.cpu_load import CpuLoad
from voxfit_cpu_onnx.piper_spec import embedded_default

VOXFIT = str(Path(sys.executable).with_name("voxfit"))
QUIET = CpuLoad(0.0, 0.1, 0.1, 0, 0.0)
OPTIONS = {"model": None, "device": None, "blocked": [], "allowed": [], "strict": None}


def test_the_key_covers_what_a_plan_depends_on(tmp_path: Path) -> None:
    voice = embedded_default()
    model = tmp_path / "voice.onnx"
    shutil.copy(voice.path, model)
    shutil.copy(voice.files["config"], tmp_path / "voice.onnx.json")
    env = {"VOXFIT_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    opts = {**OPTIONS, "model": str(model)}
    base = plan_cache.key(opts, env, QUIET, tmp_path)
    assert base and base == plan_cache.key(opts, env, QUIET, tmp_path)
    assert plan_cache.key(opts, {**env, "VOXFIT_DEVICE": "cpu"}, QUIET, tmp_path) != base  # a setting
    assert plan_cache.key({**opts, "device": "cpu"}, env, QUIET, tmp_path) != base  # a flag
    assert plan_cache.key(opts, env, CpuLoad(1.0, 0.1), tmp_path) != base  # a core taken by others
    assert plan_cache.key(opts, env, CpuLoad(0.3, 0.1), tmp_path) != base  # contended: spinning goes off
    assert plan_cache.key(opts, env, CpuLoad(0.1, 0.1), tmp_path) == base  # the same load class
    (tmp_path / "cache" / "measurements").mkdir(parents=True)
    (tmp_path / "cache" / "measurements" / "m.json").write_text("{}")
    tuned = plan_cache.key(opts, env, QUIET, tmp_path)
    assert tuned != base  # `voxfit tune` ran
    os.utime(model, ns=(1, 1))
    assert plan_cache.key(opts, env, QUIET, tmp_path) != tuned  # another model file
    (tmp_path / ".env").write_text("VOXFIT_DEVICE=cpu\n")
    assert plan_cache.key(opts, env, QUIET, tmp_path) is None  # a .env file: plans are made afresh


def test_a_stored_plan_is_not_reused_once_its_models_files_changed(tmp_path: Path, monkeypatch) -> None:
    # The default model is a plugin's: its files are known only from the plan, and re-checked on lookup.
    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"x" * 100)
    entry = {"format": plan_cache.FORMAT, "plan": "{}", "text": "t", "headroom": 0.15,
             "sources": plan_cache.file_stats([voice]), "needs_bytes": 0, "vetoed_needs_bytes": None}
    plan_cache.store(tmp_path, "k", entry)
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    assert plan_cache.lookup(tmp_path, "k") is not None
    voice.write_bytes(b"y" * 101)
    assert plan_cache.lookup(tmp_path, "k") is None


def test_a_stored_plan_is_reused_only_while_its_sources_and_memory_allow(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    entry = {"format": plan_cache.FORMAT, "plan": "{}", "text": "t", "headroom": 0.15,
             "sources": plan_cache.source_files([str(source)]), "needs_bytes": 1 * 2**30,
             "vetoed_needs_bytes": 8 * 2**30}
    plan_cache.store(tmp_path, "k", entry)
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    assert plan_cache.lookup(tmp_path, "k")["text"] == "t"
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 1 * 2**30)
    assert plan_cache.lookup(tmp_path, "k") is None  # the chosen proposal no longer fits with headroom
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 10 * 2**30)
    assert plan_cache.lookup(tmp_path, "k") is None  # the proposal vetoed for memory might fit now
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    source.write_text("x = 2  # edited\n")
    assert plan_cache.lookup(tmp_path, "k") is None  # voxfit or a plugin changed
    assert plan_cache.lookup(tmp_path, "missing") is None


def test_plan_reuses_its_plan_without_importing_pydantic_or_plugins(tmp_path: Path) -> None:
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    first = subprocess.run([VOXFIT, "plan"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert list((tmp_path / "cache" / "plans").glob("*.json"))
    probe = ("import sys\nfrom voxfit.cli import main\nmain(['plan', '--json'], standalone_mode=False)\n"
             "print('HEAVY', sorted(m for m in ('pydantic', 'pydantic_settings', 'psutil', 'voxfit_cpu_onnx', "
             "'voxfit_cuda', 'pynvml') if m in sys.modules))\n")
    # The load class may change between the two runs on a shared machine: try a few times for a hit.
    for _ in range(5):
        again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=120)
        assert again.returncode == 0, again.stderr
        if "HEAVY []" in again.stdout:
            break
    assert "HEAVY []" in again.stdout
    plan = json.loads(again.stdout.rsplit("HEAVY", 1)[0])
    assert plan["chosen"]["plugin"] == "cpu_onnx"
    text = subprocess.run([VOXFIT, "plan"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if "plan cache:" in text.stdout:
        assert text.stdout.split("(plan cache:")[0].strip() == first.stdout.strip()


def test_a_saved_hardware_profile_is_never_cached(tmp_path: Path) -> None:
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    profile = Path(__file__).parent / "data" / "hardware" / "h100.json"
    for _ in range(2):
        out = subprocess.run([VOXFIT, "plan", "--hardware", str(profile)], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        assert "plan cache:" not in out.stdout
    assert not (tmp_path / "cache" / "plans").exists()


def test_a_run_with_a_reused_plan_imports_only_the_plugin_it_needs_and_speaks(tmp_path: Path) -> None:
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    probe = ("import sys\nfrom voxfit.cli import main\n"
             "main(['run', 'Hello there.', '-q', '-o', sys.argv[1]], standalone_mode=False)\n"
             "print('PLUGINS', sorted(m for m in sys.modules if m.startswith('voxfit_') and '.' not in m))\n")
    subprocess.run([sys.executable, "-c", probe, str(tmp_path / "first.wav")], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    for _ in range(5):  # the CPU load class may change between runs on a shared machine
        again = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "again.wav")], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        if "PLUGINS ['voxfit_cpu_onnx']" in again.stdout:
            break
    assert "PLUGINS ['voxfit_cpu_onnx']" in again.stdout
    assert (tmp_path / "again.wav").stat().st_size > 22050
