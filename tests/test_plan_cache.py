"""The plan cache: what invalidates a cached plan, the memory recheck, and a reused plan that loads nothing heavy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import install_plugin_module, quiet_cpu_site, voxfit_cli
from test_fish_spec import write_checkpoint
from voxfit.planning import cache as plan_cache
from voxfit.planning.cpu_load import CpuLoad
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
    assert plan_cache.lookup(tmp_path, "k")[0] is not None
    voice.write_bytes(b"y" * 101)
    assert plan_cache.lookup(tmp_path, "k") == (None, "voxfit, a plugin or the model's files changed since")


def test_a_stored_plan_is_reused_only_while_its_sources_and_memory_allow(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    (source.parent / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        import pkg.mod  # noqa: F401  (a package on disk: its files are what the entry watches)
        sources = plan_cache.source_files(["pkg"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg.mod", None)
        sys.modules.pop("pkg", None)
    entry = {"format": plan_cache.FORMAT, "plan": "{}", "text": "t", "headroom": 0.15,
             "sources": sources, "needs_bytes": 1 * 2**30,
             "vetoed_needs_bytes": 8 * 2**30}
    plan_cache.store(tmp_path, "k", entry)
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    assert plan_cache.lookup(tmp_path, "k")[0]["text"] == "t"
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 1 * 2**30)
    assert plan_cache.lookup(tmp_path, "k") == (None, "the chosen proposal no longer fits in free memory")
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 10 * 2**30)
    assert plan_cache.lookup(tmp_path, "k") == (None, "a proposal vetoed for memory might fit now")
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    source.write_text("x = 2  # edited\n")
    assert plan_cache.lookup(tmp_path, "k")[0] is None  # voxfit or a plugin changed
    assert plan_cache.lookup(tmp_path, "missing")[0] is None


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


def _plan_json(env: dict[str, str], *args: str) -> dict:
    done = voxfit_cli("plan", "--json", *args, env=env)
    assert done.returncode in (0, 3), done.stderr.decode()
    return json.loads(done.stdout)


def _reused_run(env: dict[str, str], tmp_path: Path, *args: str) -> dict:
    """`voxfit run --json` until the plan is reused (the CPU load class may change between runs on a shared
    machine, and a plan made under another load is another plan)."""
    for attempt in range(5):
        done = voxfit_cli(*args, "run", "Hello there.", "--json", "-o", str(tmp_path / f"again{attempt}.wav"),
                          env=env)
        assert done.returncode == 0, done.stderr.decode()
        report = json.loads(done.stdout)
        if report["plan_cache"]["reused"]:
            return report
    raise AssertionError(f"no run reused its plan: {report['plan_cache']}")


def test_a_reused_plan_runs_every_plugins_hooks_as_a_fresh_one(tmp_path: Path) -> None:
    tidy = install_plugin_module(tmp_path / "site", "acme_tidy", (
        "from voxfit.sdk import hookimpl\n"
        "VOXFIT_HOOK_API = '2.1'\n"
        "@hookimpl\n"
        "def disable_training_artifacts(engine):\n"
        "    return [f'acme_tidy looked at {engine.backend}']\n"))
    env = {**tidy, "VOXFIT_CACHE_DIR": str(tmp_path / "cache")}
    first = voxfit_cli("run", "Hello there.", "--json", "-o", str(tmp_path / "first.wav"), env=env)
    assert first.returncode == 0, first.stderr.decode()
    report = json.loads(first.stdout)
    assert report["plan_cache"]["reused"] is False and report["plan_cache"]["stored"] is True
    assert "acme_tidy looked at piper-onnx" in report["artifacts_disabled"]
    again = _reused_run(env, tmp_path)
    assert again["artifacts_disabled"] == report["artifacts_disabled"]  # the plugin the plan does not involve too


def test_a_failed_strict_run_fails_again_and_leaves_no_plan(tmp_path: Path) -> None:
    broken = install_plugin_module(tmp_path / "site", "acme_broken_tidy", (
        "from voxfit.sdk import hookimpl\n"
        "VOXFIT_HOOK_API = '2.1'\n"
        "@hookimpl\n"
        "def disable_training_artifacts(engine):\n"
        "    raise RuntimeError('cannot clean this engine')\n"))
    env = {**broken, "VOXFIT_CACHE_DIR": str(tmp_path / "cache")}
    for attempt in range(2):
        out = tmp_path / f"strict{attempt}.wav"
        done = voxfit_cli("--strict", "run", "Hello world.", "-o", str(out), env=env)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr.decode()
        assert "acme_broken_tidy" in lines[0] and "cannot clean this engine" in lines[0]
        assert not out.exists()
    assert not list((tmp_path / "cache" / "plans").glob("*.json"))  # nothing remembered from a failed run
    lenient = voxfit_cli("run", "Hello world.", "--json", "-o", str(tmp_path / "lenient.wav"), env=env)
    assert lenient.returncode == 0, lenient.stderr.decode()
    problems = json.loads(lenient.stdout)["problems"]
    assert [p["plugin"] for p in problems] == ["acme_broken_tidy"]
    assert _reused_run(env, tmp_path)["problems"] == problems  # the same answer from the remembered plan


@pytest.fixture(scope="module")
def fake_rtx3060(tmp_path_factory) -> dict[str, str]:
    """A `pynvml` module on the path of a subprocess: the test suite's fake NVML as an RTX 3060."""
    site = tmp_path_factory.mktemp("nvml")
    tests = Path(__file__).parent
    (site / "pynvml.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests)!r})\nimport fake_pynvml\n"
        "sys.modules[__name__] = fake_pynvml.build('rtx3060')\n")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


@pytest.fixture
def quiet_cpu(tmp_path: Path) -> str:
    return quiet_cpu_site(tmp_path / "quiet-cpu")


def test_a_gpu_hidden_and_shown_again_gets_its_plan_back(tmp_path: Path, fake_rtx3060, quiet_cpu,
                                                          monkeypatch) -> None:
    model = str(write_checkpoint(tmp_path / "openaudio-s1-mini"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = {**fake_rtx3060, "VOXFIT_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([quiet_cpu, fake_rtx3060["PYTHONPATH"]])}
    hidden = {**env, "CUDA_VISIBLE_DEVICES": ""}
    families = []
    for step in (env, hidden, env, hidden):
        plan = _plan_json(step, "--model", model)
        families.append((plan["chosen"]["device_family"], plan["plan_cache"]["reused"]))
    # The GPU's plan is never stored (its free memory changes); the CPU plan made while it was hidden is stored,
    # reused while it stays hidden, and not once it is visible again.
    assert families == [("cuda", False), ("cpu", False), ("cuda", False), ("cpu", True)]


def test_a_plugin_named_anything_has_its_sources_and_declared_inputs_watched(tmp_path: Path) -> None:
    device = tmp_path / "dev" / "acme0"
    source = (
        "import glob\n"
        "from voxfit.sdk import Detection, PlanInputs, hookimpl\n"
        "VOXFIT_HOOK_API = '2.1'\n"
        f"PATTERN = {str(tmp_path / 'dev' / 'acme*')!r}\n"
        "@hookimpl\n"
        "def plan_inputs():\n"
        "    return PlanInputs(globs=[PATTERN])\n"
        "@hookimpl\n"
        "def detect():\n"
        "    return Detection(notes=[f'{len(glob.glob(PATTERN))} acme devices'])\n")
    env = {**install_plugin_module(tmp_path / "site", "acme_probe", source), "VOXFIT_CACHE_DIR": str(tmp_path / "c")}
    assert _plan_json(env)["plan_cache"]["stored"] is True
    pattern = str(tmp_path / "dev" / "acme*")
    device.parent.mkdir()
    why = _reason_after(env, lambda attempt: (tmp_path / "dev" / f"acme{attempt}").write_text(""))
    assert pattern in why and "changed since" in why
    notes = _plan_json(env)["hardware"]["notes"]
    assert any(re.fullmatch(r"acme_probe: [1-9]\d* acme devices", note) for note in notes), notes

    def edit(attempt: int) -> None:
        with open(tmp_path / "site" / "acme_probe.py", "a") as handle:
            handle.write(f"# edited {attempt}\n")

    assert _reason_after(env, edit) == "voxfit, a plugin or the model's files changed since"


def _reason_after(env: dict[str, str], change, tries: int = 5) -> str:
    """Why the plan after ``change`` was not reused, once the plan before it was reused. The CPU load class may
    change between commands on a shared machine (another key: "no plan remembered"); then try again."""
    for attempt in range(tries):
        for _ in range(tries):
            if _plan_json(env)["plan_cache"]["reused"]:
                break
        change(attempt)
        cache = _plan_json(env)["plan_cache"]
        assert not cache["reused"]
        if not cache["reason"].startswith("no plan remembered"):
            return cache["reason"]
    raise AssertionError("the load class changed around every change")


def test_a_plugin_that_detects_without_declaring_its_inputs_is_planned_afresh(tmp_path: Path) -> None:
    env = {**install_plugin_module(tmp_path / "site", "acme_silent", (
        "from voxfit.sdk import Detection, hookimpl\n"
        "VOXFIT_HOOK_API = '2.0'\n"
        "@hookimpl\n"
        "def detect():\n"
        "    return Detection(notes=['looked somewhere'])\n")), "VOXFIT_CACHE_DIR": str(tmp_path / "c")}
    for _ in range(2):
        cache = _plan_json(env)["plan_cache"]
        assert not cache["reused"] and not cache["stored"]
        assert "acme_silent detects hardware but declares no plan_inputs" in cache["reason"]
    assert not (tmp_path / "c" / "plans").exists()


def test_no_cache_and_the_setting_plan_afresh_and_remember_nothing(tmp_path: Path) -> None:
    env = {"VOXFIT_CACHE_DIR": str(tmp_path / "c")}
    skipped = _plan_json(env, "--no-cache")["plan_cache"]
    assert (skipped["reused"], skipped["stored"], skipped["reason"]) == (False, False, "--no-cache")
    off = _plan_json({**env, "VOXFIT_PLAN_CACHE": "false"})["plan_cache"]
    assert not off["reused"] and not off["stored"] and "VOXFIT_PLAN_CACHE=false" in off["reason"]
    assert not (tmp_path / "c" / "plans").exists()
    done = voxfit_cli("run", "--no-cache", "Hello.", "-q", "-o", str(tmp_path / "x.wav"), env=env)
    assert done.returncode == 0 and not (tmp_path / "c" / "plans").exists()


def test_a_declared_input_that_cannot_be_read_means_a_fresh_plan(tmp_path: Path, monkeypatch) -> None:
    node = tmp_path / "npu0"
    node.write_text("v1")
    inputs = plan_cache.read_inputs({"acme": {"paths": [str(node)], "environ": ["ACME_VISIBLE"]}}, {})
    entry = {"plan": "{}", "text": "t", "headroom": 0.0, "sources": {}, "inputs": inputs, "needs_bytes": 0,
             "vetoed_needs_bytes": None}
    plan_cache.store(tmp_path, "k", entry)
    monkeypatch.setattr(plan_cache, "available_memory", lambda: 4 * 2**30)
    assert plan_cache.lookup(tmp_path, "k", {})[0] is not None
    assert "ACME_VISIBLE" in plan_cache.lookup(tmp_path, "k", {"ACME_VISIBLE": "0"})[1]
    real_stat = os.stat

    def denied(path, *args, **kwargs):
        if str(path) == str(node):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    hit, why = plan_cache.lookup(tmp_path, "k", {})
    assert hit is None and why == f"a declared input cannot be read ({node}: Permission denied)"
    monkeypatch.setattr(os, "stat", real_stat)
    node.unlink()  # a device node that vanished
    hit, why = plan_cache.lookup(tmp_path, "k", {})
    assert hit is None and str(node) in why


OLD_NAME = "tts" + "fw"  # the name the project was developed under (see test_project_name.py)


def test_a_cache_from_before_the_rename_is_never_read(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    old = xdg / OLD_NAME / "plans"
    old.mkdir(parents=True)
    (old / "garbage.json").write_text("{not json")
    env = {"XDG_CACHE_HOME": str(xdg), "VOXFIT_CACHE_DIR": ""}
    assert _plan_json(env)["plan_cache"]["stored"] is True
    assert list((xdg / "voxfit" / "plans").glob("*.json"))
    assert [p.name for p in old.iterdir()] == ["garbage.json"]
    # An entry of the old format where a plan of this one would be (a cache directory shared by both) is not
    # read as a plan.
    key = plan_cache.key(OPTIONS, {"VOXFIT_CACHE_DIR": str(tmp_path / "shared")}, QUIET, tmp_path)
    (tmp_path / "shared" / "plans").mkdir(parents=True)
    (tmp_path / "shared" / "plans" / f"{key}.json").write_text(json.dumps(
        {"format": 2, "plan": "{}", "text": "an old plan\n", "sources": {}, "needs_bytes": 0}))
    assert plan_cache.lookup(tmp_path / "shared", key) == (None, "the remembered plan is of another format")
