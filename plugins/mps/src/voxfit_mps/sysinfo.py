"""What macOS tells about an Apple Silicon Mac, read through its own tools.

Every fact comes through one of the boundary calls below (``platform``,
``subprocess.run`` of ``sysctl``, ``ioreg``, ``vm_stat`` and, only when torch
is installed, a child Python). Tests replace exactly those calls, so the
parsing and decisions here run for real.

Asking torch whether MPS is usable: ``voxfit detect`` and ``voxfit plan`` must
not import torch (it costs seconds and is a rule of the project). So the
question goes to a child interpreter, and only when torch is installed
(``importlib.util.find_spec``, which imports nothing). This process never
imports torch here; the child's cost (a second or two on a Mac) is paid by
``detect`` only, never by a plan from a saved profile.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

from . import chips

_find_spec = importlib.util.find_spec  # boundary: is torch installed? (imports nothing)
TORCH_PROBE = (
    "import json, torch; b = torch.backends.mps; "
    "print(json.dumps({'built': bool(b.is_built()), 'available': bool(b.is_available()), "
    "'torch': torch.__version__}))"
)


def _run(args: list[str], timeout: float = 10.0) -> Optional[str]:
    """stdout of a command, or None when it is missing, fails or hangs (never an error)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def sysctl(name: str) -> Optional[str]:
    out = _run(["sysctl", "-n", name])
    return out.strip() if out and out.strip() else None


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def gpu_core_count() -> Optional[int]:
    """From the AGX accelerator's registry entry (``"gpu-core-count" = 8``); None if not told."""
    out = _run(["ioreg", "-rc", "AGXAccelerator", "-d", "1"])
    match = re.search(r'"gpu-core-count"\s*=\s*(\d+)', out or "")
    return int(match.group(1)) if match else None


def available_memory() -> Optional[int]:
    """Free + inactive + speculative pages from ``vm_stat``: what can be had without swapping."""
    out = _run(["vm_stat"])
    if not out:
        return None
    page = re.search(r"page size of (\d+) bytes", out)
    counts = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"^Pages ([\w ]+?):\s+(\d+)\.", out, re.M)}
    if not page or "free" not in counts:
        return None
    return int(page.group(1)) * sum(counts.get(k, 0) for k in ("free", "inactive", "speculative"))


def torch_mps() -> tuple[Optional[bool], str]:
    """(MPS usable?, why) asked of torch in a child interpreter; (None, why) when it cannot be asked."""
    if _find_spec("torch") is None:
        return None, "torch is not installed, so MPS availability is checked when the engine loads"
    out = _run([sys.executable, "-c", TORCH_PROBE], timeout=120.0)
    try:
        answer = json.loads((out or "").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, "asking torch about MPS failed (child interpreter gave no answer)"
    version = answer.get("torch", "?")
    if answer.get("available"):
        return True, f"torch {version} reports MPS available"
    if not answer.get("built"):
        return False, f"torch {version} was built without MPS support"
    return False, f"torch {version} is built with MPS but reports it unavailable (MPS needs macOS 12.3+)"


@dataclass
class AppleSilicon:
    brand: str
    chip: Optional[str]
    macos: str
    memory_total_bytes: Optional[int]
    memory_available_bytes: Optional[int]
    gpu_cores: Optional[int]
    performance_cores: Optional[int]
    efficiency_cores: Optional[int]
    bandwidth: Optional[chips.ChipBandwidth]
    mps_available: Optional[bool]
    notes: list[str] = field(default_factory=list)


def is_mac() -> bool:
    return platform.system() == "Darwin"


def is_apple_silicon() -> bool:
    # Under Rosetta 2 an x86_64 Python on Apple Silicon reports x86_64; sysctl still tells the truth.
    return platform.machine() == "arm64" or sysctl("hw.optional.arm64") == "1"


def probe() -> AppleSilicon:
    brand = sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    gpu_cores = gpu_core_count()
    chip = chips.chip_name(brand)
    notes: list[str] = []
    bw = chips.bandwidth(chip, gpu_cores)
    if bw is None:
        notes.append(f"{brand}: not in voxfit's chip table, memory bandwidth unknown")
    if platform.machine() != "arm64":
        notes.append("this Python runs under Rosetta 2 (x86_64): install an arm64 Python to use MPS")
    mps, why = torch_mps()
    notes.append(why)
    return AppleSilicon(
        brand=brand,
        chip=chip,
        macos=platform.mac_ver()[0] or "",
        memory_total_bytes=_int(sysctl("hw.memsize")),
        memory_available_bytes=available_memory(),
        gpu_cores=gpu_cores,
        performance_cores=_int(sysctl("hw.perflevel0.physicalcpu")),
        efficiency_cores=_int(sysctl("hw.perflevel1.physicalcpu")),
        bandwidth=bw,
        mps_available=False if platform.machine() != "arm64" else mps,
        notes=notes,
    )
