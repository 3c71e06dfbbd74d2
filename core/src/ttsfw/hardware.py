"""What every plan needs to know about the host, plus merging the plugins' findings.

Only portable facts live here (OS, architecture, CPU, memory); devices come
from the plugins' ``detect`` hooks.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Iterable, Optional

from pydantic import ValidationError

from .errors import UsageError
from .models import Detection, HardwareProfile

# ISA extensions that change which kernels inference libraries pick. The full
# /proc/cpuinfo list is long and mostly irrelevant to a plan.
RELEVANT_ISA = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "", []
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, [f for f in RELEVANT_ISA if f in flags]


def detect_host() -> HardwareProfile:
    """The core's own, cheap view of the machine (no plugin involved)."""
    import psutil  # light, and needed by every plan for memory and core counts

    cpu_model, isa = _cpuinfo()
    memory = psutil.virtual_memory()
    return HardwareProfile(
        os=platform.system().lower() or sys.platform,
        os_release=platform.release(),
        arch=_ARCH_ALIASES.get(platform.machine().lower(), platform.machine().lower()),
        python=platform.python_version(),
        cpu_model=cpu_model or platform.processor() or "unknown CPU",
        cores_physical=psutil.cpu_count(logical=False),
        cores_logical=psutil.cpu_count(logical=True) or os.cpu_count(),
        isa_flags=isa,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
    )


def merge(host: HardwareProfile, detections: Iterable[Detection]) -> HardwareProfile:
    """Fold every plugin's detection into one profile; a duplicate device id is dropped with a note."""
    profile = host.model_copy(deep=True)
    for detection in detections:
        for device in detection.devices:
            if profile.device(device.id) is not None:
                profile.notes.append(
                    f"{device.detected_by}: device id {device.id!r} already reported by another plugin; ignored"
                )
                continue
            profile.devices.append(device)
        profile.flags.update(detection.flags)
        profile.notes.extend(detection.notes)
    return profile


def load_profile(path: Path) -> HardwareProfile:
    """A saved profile (what ``ttsfw detect --json`` prints) standing in for detection."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"hardware profile not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"hardware profile {path} is not readable JSON: {exc}") from None
    if isinstance(data, dict) and "hardware" in data and "os" not in data:
        data = data["hardware"]  # accept a whole saved plan too
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise UsageError(f"hardware profile {path} is invalid at {where}: {err['msg']}") from None
    return profile.model_copy(update={"source": str(path)})


def describe_memory(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    return f"{n / 2**30:.1f} GiB"
