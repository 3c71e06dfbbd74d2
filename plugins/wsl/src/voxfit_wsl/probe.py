"""Telling WSL2 from WSL1 from plain Linux, through a root path tests can point elsewhere.

Everything is read under ``root`` (default ``/``; ``VOXFIT_WSL_ROOT`` moves it):
``proc/version``, ``proc/sys/kernel/osrelease``, ``proc/mounts``, ``dev/dxg``,
``usr/lib/wsl/lib/libcuda.so``; plus ``WSL_DISTRO_NAME`` from the environment.

* WSL is a Microsoft kernel: ``/proc/version`` names Microsoft.
* WSL2 runs a real Linux kernel whose release ends in ``-microsoft-standard-WSL2``
  (older: ``-microsoft-standard``); WSL1 is a translation layer whose release
  looks like ``4.4.0-19041-Microsoft``. ``/dev/dxg`` (GPU paravirtualization)
  exists only in WSL2.
* GPU work needs WSL2, ``/dev/dxg`` and the Windows NVIDIA driver's
  ``libcuda.so`` in ``/usr/lib/wsl/lib``. WSL1 has no GPU at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

ROOT_ENV = "VOXFIT_WSL_ROOT"
WSL_LIB = "/usr/lib/wsl/lib"
_DRIVE = re.compile(r"^/mnt/[a-zA-Z]$")


def default_root(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ROOT_ENV) or "/")


#: Everything probe() reads under the root (plan_inputs declares them).
READS = ("proc/version", "proc/sys/kernel/osrelease", "proc/mounts", "dev/dxg", WSL_LIB.lstrip("/") + "/libcuda.so")


def paths_read(environ: Mapping[str, str] = os.environ) -> list[str]:
    root = default_root(environ).absolute()
    return [str(root / relative) for relative in READS]


def _read(root: Path, relative: str) -> str:
    try:
        return (root / relative).read_text(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class WslInfo:
    kind: Optional[str]  # "wsl2", "wsl1" or None (not WSL)
    kernel: str = ""
    distro: str = ""
    dxg: bool = False
    libcuda: bool = False
    windows_mounts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def windows_mounts(root: Path) -> list[str]:
    """Mount points of Windows drives (9p / drvfs), e.g. ["/mnt/c"]; /proc/mounts escapes spaces as \\040."""
    found = []
    for line in _read(root, "proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and (parts[2] in ("9p", "drvfs") or _DRIVE.match(parts[1])):
            point = parts[1].replace("\\040", " ")
            if parts[2] in ("9p", "drvfs") and point.startswith(("/usr/lib/wsl", "/tmp/.X11", "/mnt/wsl", "/init")):
                continue  # WSL's own 9p shares, not Windows drives
            found.append(point)
    return sorted(set(found))


def probe(root: Optional[Path] = None, environ: Mapping[str, str] = os.environ) -> WslInfo:
    root = default_root(environ) if root is None else Path(root)
    version = _read(root, "proc/version")
    release = _read(root, "proc/sys/kernel/osrelease")
    if "microsoft" not in (version + " " + release).lower():
        return WslInfo(kind=None)
    dxg = (root / "dev" / "dxg").exists()
    libcuda = (root / WSL_LIB.lstrip("/") / "libcuda.so").exists()
    low = release.lower()
    wsl2 = "wsl2" in low or "microsoft-standard" in low or dxg
    info = WslInfo(kind="wsl2" if wsl2 else "wsl1", kernel=release, distro=environ.get("WSL_DISTRO_NAME", ""),
                   dxg=dxg, libcuda=libcuda, windows_mounts=windows_mounts(root) or ["/mnt/c"])
    name = f"WSL {'2' if wsl2 else '1'}" + (f" ({info.distro})" if info.distro else "") + f", kernel {release or '?'}"
    info.notes.append(name)
    if not wsl2:
        info.notes.append("WSL1 has no GPU access (no /dev/dxg): CUDA needs WSL2 "
                          "(in Windows: wsl --set-version <distro> 2); models run on the CPU")
    elif not dxg:
        info.notes.append("WSL2 without /dev/dxg: no GPU paravirtualization; update WSL (wsl --update) and Windows")
    elif not libcuda:
        info.notes.append(f"WSL2 GPU device present but no {WSL_LIB}/libcuda.so: install the NVIDIA driver on "
                          "Windows (never a Linux NVIDIA driver inside WSL)")
    else:
        info.notes.append(f"WSL2 GPU path: /dev/dxg and the Windows driver's libcuda.so in {WSL_LIB}")
    return info
