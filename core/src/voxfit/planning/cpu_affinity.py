"""The CPUs this process may run on, and the physical cores they cover (no psutil, no pydantic).

``os.cpu_count()`` counts the machine; ``taskset``, a cpuset (Docker's
``--cpuset-cpus``, Kubernetes' static CPU manager) or a scheduler's pinning
narrows what this process may use, and a plan that sizes threads for the
machine then runs more threads than it has CPUs. Light on purpose: the plan
cache's key reads it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

_TOPOLOGY = Path("/sys/devices/system/cpu")


def allowed_cpus() -> Optional[set[int]]:
    """The logical CPU ids this process may run on, or None where the OS does not say (macOS, Windows)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return set(getaffinity(0))
    except OSError:
        return None


def physical_cores_of(cpus: set[int], root: Path = _TOPOLOGY) -> Optional[int]:
    """Distinct physical cores behind these logical CPUs (hyper-thread siblings count once), or None if unknown."""
    cores = set()
    for cpu in cpus:
        topology = root / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


def usable_count() -> Optional[int]:
    """How many logical CPUs this process may use (the affinity mask, else the machine's count)."""
    cpus = allowed_cpus()
    return len(cpus) if cpus else os.cpu_count()
