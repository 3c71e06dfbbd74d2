"""Plans remembered between commands, keyed on everything a plan depends on; the rest rechecked on reuse.

Making a plan costs more than the rest of a short ``voxfit plan``: importing
pydantic-settings, building the pydantic models, importing every plugin,
detecting, scoring. When nothing it depends on changed, the plan is the same,
so it is stored as ``<cache dir>/plans/<key>.json`` and reused. The key
covers, as raw inputs (so that checking it needs none of those imports):

* the command's options and every ``VOXFIT_*`` variable (settings that were
  validated when the plan was made: the same input validates the same way);
  with a ``.env`` file in the working directory no plan is reused;
* the installation directories on ``sys.path`` (an install or uninstall
  changes them) and the Python that runs;
* the model file's (or checkpoint directory's) identity: path, size, mtime;
* the CPU (model, logical and usable cores, architecture) and the total memory;
* ``voxfit tune``'s measurements for this cache directory;
* the coarse CPU load (cores other processes take, whether contended):
  the cpu_onnx plugin fits threads to it.

Checked again on every reuse, from what the entry recorded:

* the size and modification time of every source file of voxfit and of
  every plugin loaded when the plan was made, whatever its module is called,
  and of the model's files;
* every input the plugins declared through the ``plan_inputs`` hook
  (environment variables, device nodes, driver files, globs): a GPU that was
  hidden or absent when the plan was made and is there now means a new plan;
  an input that cannot be read means a new plan too;
* free memory, against the chosen proposal's needs (and what vetoed
  proposals would need), with the plan's headroom.

Plans for machines with a GPU, or for a saved profile, are never stored (a
GPU's free memory would need NVML to recheck), nor a plan while a plugin that
detects hardware declares no inputs, nor the plan of a run that failed.
This module imports nothing heavy.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import stat
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from voxfit.planning.cpu_affinity import usable_count
from voxfit.planning.cpu_load import CpuLoad
from voxfit.util.cache_dir import PREFIX, PROJECT, default_cache_dir

#: Entries of another format (an older voxfit, another program's cache) are never read as plans.
FORMAT = 3
_SMALL_FILE = 1 << 20  # content of a declared file is compared up to this size (driver version files are tiny)
_FALSE = {"0", "false", "f", "no", "n", "off"}


def disabled_by(environ: Mapping[str, str]) -> Optional[str]:
    """Why plans are not remembered at all here, or None: VOXFIT_PLAN_CACHE=false (parsed as the settings do)."""
    value = environ.get(f"{PREFIX}PLAN_CACHE", "").strip().lower()
    return f"{PREFIX}PLAN_CACHE={value}" if value in _FALSE else None


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


def key(options: dict[str, Any], environ: Mapping[str, str], load: CpuLoad, cwd: Path) -> Optional[str]:
    """The key of the plan these inputs make, or None when plans must not be reused (a .env file here)."""
    if (cwd / ".env").exists():
        return None
    settings = sorted((k, v) for k, v in environ.items() if k.startswith(PREFIX))
    inputs = {
        "format": FORMAT,
        "options": options,
        "settings": settings,
        "python": [sys.version, sys.prefix],
        "installed": [[p, _stat(Path(p))] for p in sys.path if p],
        "model": _model_identity(options.get("model") or environ.get(f"{PREFIX}MODEL")),
        "cpu": _cpu(),
        "tuned": _listing(default_cache_dir(environ) / "measurements"),
        "load": list(load.coarse()),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def source_files(modules: Iterable[Any]) -> dict[str, Optional[list[int]]]:
    """Size and mtime of every .py file of these modules' top-level packages (voxfit's and the plugins').

    A plugin whose top-level module is a single file is that file alone: its
    directory is site-packages, not the plugin.
    """
    out: dict[str, Optional[list[int]]] = {}
    for module in modules:
        top = sys.modules.get(getattr(module, "__name__", str(module)).split(".")[0])
        origin = getattr(top, "__file__", None)
        if not origin:
            continue  # a namespace package or a module built in memory (tests): nothing on disk to watch
        if hasattr(top, "__path__"):
            for path in sorted(Path(origin).parent.rglob("*.py")):
                out[str(path)] = _stat(path)
        else:
            out[str(origin)] = _stat(Path(origin))
    return out


# -- declared inputs ------------------------------------------------------------


class UnreadableInput(Exception):
    """A declared input could not be read: whether it changed cannot be told."""


def read_inputs(declared: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Each declared input's reading, keyed ``env:NAME``, ``path:PATH`` or ``glob:PATTERN``.

    ``declared`` maps a plugin's name to its PlanInputs (or the same as a dict).
    Environment values are kept as digests: a cache file holds no secrets.
    """
    out: dict[str, Any] = {}
    for inputs in declared.values():
        fields = inputs if isinstance(inputs, Mapping) else inputs.model_dump()
        for name in fields.get("environ", []):
            value = environ.get(name)
            out[f"env:{name}"] = None if value is None else hashlib.sha256(value.encode()).hexdigest()[:16]
        for path in fields.get("paths", []):
            out[f"path:{path}"] = read_path(path)
        for pattern in fields.get("globs", []):
            out[f"glob:{pattern}"] = sorted(glob.glob(pattern))
    return out


def read_path(path: str) -> Any:
    """What a declared path reads as: None when absent, else its type, owner, permissions and what it holds."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnreadableInput(f"{path}: {exc.strerror or exc}") from None
    access = [os.access(path, os.R_OK), os.access(path, os.W_OK)]
    head = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, access]
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return [*head, st.st_rdev]  # which device, not its contents or times
    try:
        if stat.S_ISDIR(st.st_mode):
            return [*head, sorted(os.listdir(path))]
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:  # /proc files report size 0: read, don't trust st_size
                return [*head, hashlib.sha256(handle.read(_SMALL_FILE)).hexdigest()[:16]]
    except OSError as exc:
        raise UnreadableInput(f"{path}: {exc.strerror or exc}") from None
    return head


def _changed_input(recorded: Mapping[str, Any], environ: Mapping[str, str]) -> Optional[str]:
    """The first declared input that reads otherwise now (or cannot be read), as a phrase; None if all hold."""
    for name, then in recorded.items():
        kind, _, what = name.partition(":")
        try:
            if kind == "env":
                now = read_inputs({"": {"environ": [what]}}, environ)[name]
            elif kind == "path":
                now = read_path(what)
            elif kind == "glob":
                now = sorted(glob.glob(what))
            else:
                return f"the entry records an input of unknown kind {name!r}"
        except UnreadableInput as exc:
            return f"a declared input cannot be read ({exc})"
        if json.loads(json.dumps(now)) != then:  # the entry went through JSON: compare like with like
            return f"{'environment variable ' + what if kind == 'env' else what} changed since"
    return None


# -- storing and finding --------------------------------------------------------


def _path(cache_dir: Path, plan_key: str) -> Path:
    return cache_dir / "plans" / f"{plan_key}.json"


def store(cache_dir: Path, plan_key: str, entry: dict[str, Any]) -> None:
    """Remember a plan (best effort: a cache that cannot be written only costs the next plan its time)."""
    from voxfit.util.files import write_atomic

    entry = {"format": FORMAT, "project": PROJECT, "made_at": time.strftime("%Y-%m-%d %H:%M:%S"), **entry}
    try:
        write_atomic(_path(cache_dir, plan_key), json.dumps(entry).encode())
    except OSError:
        pass


def lookup(cache_dir: Path, plan_key: str, environ: Mapping[str, str] = os.environ
           ) -> tuple[Optional[dict[str, Any]], str]:
    """The stored plan for this key if everything it depends on still holds, and why it is or is not reused."""
    from voxfit.util.files import read_json

    entry = read_json(_path(cache_dir, plan_key))
    if not entry:
        return None, "no plan remembered for these settings, options, model, machine and CPU load"
    if entry.get("format") != FORMAT or entry.get("project") != PROJECT or not isinstance(entry.get("sources"), dict):
        return None, "the remembered plan is of another format"
    if any(_stat(Path(p)) != st for p, st in entry["sources"].items()):
        return None, "voxfit, a plugin or the model's files changed since"
    changed = _changed_input(entry.get("inputs") or {}, environ)
    if changed:
        return None, changed
    usable = (available_memory() or 0) * (1.0 - float(entry.get("headroom", 0.15)))
    needs, vetoed_needs = entry.get("needs_bytes") or 0, entry.get("vetoed_needs_bytes")
    if usable < needs:
        return None, "the chosen proposal no longer fits in free memory"
    if vetoed_needs is not None and usable >= vetoed_needs:
        return None, "a proposal vetoed for memory might fit now"
    return entry, f"made {entry.get('made_at', '?')} from the same inputs; free memory rechecked"
