"""Plans remembered between commands, keyed on everything a plan depends on; free memory rechecked.

Making a plan costs more than the rest of a short ``voxfit plan``: importing
pydantic-settings, building the pydantic models, importing every plugin,
detecting, scoring. When nothing it depends on changed, the plan is the same,
so it is stored as ``<cache dir>/plans/<key>.json`` and reused. The key
covers, as raw inputs (so that checking it needs none of those imports):

* the command's options and every ``VOXFIT_*`` variable (settings that were
  validated when the plan was made: the same input validates the same way);
  with a ``.env`` file in the working directory no plan is reused;
* the plugins and voxfit itself: the installation directories on ``sys.path``
  (an install or uninstall changes them) and, checked on reuse, the size and
  modification time of every source file of voxfit and of each plugin;
* the model file's (or checkpoint directory's) identity: path, size, mtime;
* the CPU (model, logical cores, architecture) and the total memory;
* ``voxfit tune``'s measurements for this cache directory;
* the coarse CPU load (cores other processes take, whether contended):
  the cpu_onnx plugin fits threads to it.

Free memory is not in the key: it is rechecked on reuse against the chosen
proposal's needs (and what vetoed proposals would need), with the plan's
headroom. Plans for machines with a GPU, or for a saved profile, are never
cached: a GPU's free memory would need NVML to recheck.
This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from .cpu_affinity import usable_count
from .cpu_load import CpuLoad

FORMAT = 2


def default_cache_dir(environ: dict[str, str]) -> Path:
    """Where the settings would put the cache (VOXFIT_CACHE_DIR, else XDG or ~/.cache)."""
    if environ.get("VOXFIT_CACHE_DIR"):
        return Path(environ["VOXFIT_CACHE_DIR"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voxfit"


def _stat(path: Path) -> Optional[list[int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _listing(directory: Path) -> list[Any]:
    try:
        return sorted([entry.name, _stat(Path(entry.path))] for entry in os.scandir(directory))
    except OSError:
        return []


def _cpu() -> list[Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware")):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        model = platform.processor()
    # The CPUs this process may use, not the machine's: `taskset -c 0 voxfit plan` must not reuse a 2-thread plan.
    return [model, os.cpu_count(), usable_count(), platform.machine(), _meminfo().get("MemTotal")]


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def available_memory() -> Optional[int]:
    return _meminfo().get("MemAvailable")


def _model_identity(model: Optional[str]) -> list[Any]:
    # The default model is whatever a plugin offers: its files are re-checked by lookup() (model_files),
    # since which files they are is known only once a plugin has resolved it.
    if not model:
        return ["default"]
    path = Path(model).expanduser()
    return [str(path.resolve()), _stat(path), _listing(path) if path.is_dir() else None,
            _stat(Path(str(path) + ".json"))]


def file_stats(paths: Iterable[Any]) -> dict[str, Optional[list[int]]]:
    """Size and mtime of each file (a resolved model's files), for lookup() to hold unchanged."""
    return {str(Path(p)): _stat(Path(p)) for p in paths}


def key(options: dict[str, Any], environ: dict[str, str], load: CpuLoad, cwd: Path) -> Optional[str]:
    """The key of the plan these inputs make, or None when plans must not be reused (a .env file here)."""
    if (cwd / ".env").exists():
        return None
    settings = sorted((k, v) for k, v in environ.items() if k.startswith("VOXFIT_"))
    inputs = {
        "format": FORMAT,
        "options": options,
        "settings": settings,
        "python": [sys.version, sys.prefix],
        "installed": [[p, _stat(Path(p))] for p in sys.path if p],
        "model": _model_identity(options.get("model") or environ.get("VOXFIT_MODEL")),
        "cpu": _cpu(),
        "tuned": _listing(default_cache_dir(environ) / "measurements"),
        # More cores taken than leave one free all end in one thread: the same plan.
        "load": [min(load.cores_taken, max(1, (usable_count() or 2) - 1)), load.contended],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def source_files(module_files: Iterable[str]) -> dict[str, Optional[list[int]]]:
    """Size and mtime of every .py file in the packages of these modules (voxfit's and the plugins')."""
    out: dict[str, Optional[list[int]]] = {}
    for origin in module_files:
        package = Path(origin).parent
        for path in sorted(package.rglob("*.py")):
            out[str(path)] = _stat(path)
    return out


def _path(cache_dir: Path, plan_key: str) -> Path:
    return cache_dir / "plans" / f"{plan_key}.json"


def store(cache_dir: Path, plan_key: str, entry: dict[str, Any]) -> None:
    """Remember a plan (best effort: a cache that cannot be written only costs the next plan its time)."""
    from .files import write_atomic

    entry = {**entry, "made_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        write_atomic(_path(cache_dir, plan_key), json.dumps(entry).encode())
    except OSError:
        pass


def lookup(cache_dir: Path, plan_key: str) -> Optional[dict[str, Any]]:
    """The stored plan for this key if its sources are unchanged and free memory still gives the same plan."""
    from .files import read_json

    entry = read_json(_path(cache_dir, plan_key))
    if entry.get("format") != FORMAT or not isinstance(entry.get("sources"), dict):
        return None
    if any(_stat(Path(p)) != st for p, st in entry["sources"].items()):
        return None  # voxfit, a plugin or the model's files changed since
    usable = (available_memory() or 0) * (1.0 - float(entry.get("headroom", 0.15)))
    needs, vetoed_needs = entry.get("needs_bytes") or 0, entry.get("vetoed_needs_bytes")
    if usable < needs or (vetoed_needs is not None and usable >= vetoed_needs):
        return None  # the chosen proposal no longer fits, or one vetoed for memory might fit now
    return entry
