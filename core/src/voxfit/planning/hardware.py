"""What every plan needs to know about the host, plus merging the plugins' findings.

Only portable facts live here (OS, architecture, CPU, memory); devices come
from the plugins' ``detect`` hooks.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Iterable, Optional

from pydantic import ValidationError

from voxfit.errors import UsageError
from voxfit.models import Detection, HardwareProfile
from voxfit.planning import cpu_affinity
from voxfit.util.files import UnreadableFile, load_small_json

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


def detect_host(cpu_budget: Optional[int] = None) -> HardwareProfile:
    """The core's own, cheap view of the machine (no plugin involved).

    Cores are those this process may run on (its CPU affinity), capped by
    ``cpu_budget`` (``VOXFIT_CPU_BUDGET``): a plan never sizes threads for CPUs
    the process cannot have. Each cap is written in the profile's notes.
    """
    import psutil  # light, and needed by every plan for memory and core counts

    cpu_model, isa = _cpuinfo()
    memory = psutil.virtual_memory()
    profile = HardwareProfile(
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
    return apply_cpu_budget(_within_affinity(profile), cpu_budget)


def _physical_within(physical: Optional[int], logical: Optional[int], budget: int) -> Optional[int]:
    """Physical cores behind ``budget`` logical CPUs: on a machine with 2 hyper-threads per core, 28 CPUs are
    14 cores, and a plan that ran 28 threads there would put two on each core (what the plugins avoid)."""
    if physical is None:
        return None
    if not logical or logical <= physical:
        return min(physical, budget)
    return max(1, min(physical, round(budget * physical / logical)))


def _within_affinity(profile: HardwareProfile) -> HardwareProfile:
    """Count only the CPUs this process may run on (taskset, a cpuset, a container's pinning)."""
    cpus = cpu_affinity.allowed_cpus()
    logical = profile.cores_logical
    if not cpus or logical is None or len(cpus) >= logical:
        return profile
    physical = cpu_affinity.physical_cores_of(cpus)
    if physical is None:  # topology unreadable: each allowed CPU may be its own core, never more than the machine's
        physical = min(profile.cores_physical or len(cpus), len(cpus))
    note = (f"CPU affinity: this process may run on {len(cpus)} of {logical} logical CPUs (taskset, a cpuset or "
            f"a container's pinning); plans count {physical} physical / {len(cpus)} logical cores")
    return profile.model_copy(update={"cores_physical": physical, "cores_logical": len(cpus),
                                      "notes": [*profile.notes, note]})


def apply_cpu_budget(profile: HardwareProfile, budget: Optional[int]) -> HardwareProfile:
    """Cap the cores a plan counts at ``budget`` (a container's or a Ray replica's share), with a note saying so."""
    physical, logical = profile.cores_physical, profile.cores_logical
    if budget is None or not any(n is not None and n > budget for n in (physical, logical)):
        return profile
    capped_logical = min(logical, budget) if logical is not None else budget
    capped_physical = _physical_within(physical, logical, capped_logical)
    note = (f"CPU budget {budget} (setting cpu_budget, VOXFIT_CPU_BUDGET): plans count {capped_physical or '?'} physical / {capped_logical} "
            f"logical cores of the {physical or '?'} / {logical or '?'} "
            + ("this process may use" if profile.source == "detected" else "the profile describes"))
    return profile.model_copy(update={"cores_physical": capped_physical, "cores_logical": capped_logical,
                                      "notes": [*profile.notes, note]})


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
    """A saved profile (what ``voxfit detect --json`` prints) standing in for detection."""
    if not Path(path).exists():
        raise UsageError(f"hardware profile not found: {path}")
    try:
        data = load_small_json(Path(path))  # bounded: --hardware /dev/zero must not read until memory runs out
    except UnreadableFile as exc:
        raise UsageError(f"hardware profile {path} {exc}") from None
    if isinstance(data, dict) and "hardware" in data and "os" not in data:
        data = data["hardware"]  # accept a whole saved plan too
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise UsageError(f"hardware profile {path} is invalid at {where}: {err['msg']}") from None
    problem = _implausible(profile)
    if problem:
        raise UsageError(f"hardware profile {path} is invalid at {problem}")
    return profile.model_copy(update={"source": str(path)})


def _implausible(profile: HardwareProfile) -> Optional[str]:
    """The first value no machine can have ("cores_logical: -4"), or None.

    Detection never produces these, but a saved profile can be edited by hand,
    and the plugins' arithmetic on it (threads from cores, fits from memory)
    must not be what reports the mistake.
    """
    if profile.schema_version != 1:
        return f"schema_version: {profile.schema_version} is not a profile this voxfit reads (it reads 1)"
    counts = {"cores_physical": profile.cores_physical, "cores_logical": profile.cores_logical}
    for name, value in counts.items():
        if value is not None and value < 1:
            return f"{name}: {value} is not a number of cores"
    sizes = {"memory_total_bytes": profile.memory_total_bytes,
             "memory_available_bytes": profile.memory_available_bytes}
    for i, device in enumerate(profile.devices):
        sizes[f"devices.{i}.memory_total_bytes"] = device.memory_total_bytes
        sizes[f"devices.{i}.memory_free_bytes"] = device.memory_free_bytes
    for name, value in sizes.items():
        if value is not None and value < 0:
            return f"{name}: {value} is a negative amount of memory"
    for i, device in enumerate(profile.devices):
        busy = device.utilization_percent
        if busy is not None and not 0 <= busy <= 100:
            return f"devices.{i}.utilization_percent: {busy} is not a percentage"
    return None


def describe_memory(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    return f"{n / 2**30:.1f} GiB"
