"""Live machine figures for ``/v1/system``: CPU and RAM from psutil, devices from the plugins.

The core knows no hardware family: device figures (a GPU's utilisation and
memory) are whatever the installed plugins' ``detect`` hooks report, the same
path ``voxfit detect`` takes. Detection can cost tens of milliseconds (NVML), so
it is refreshed at most every ``interval`` seconds and shared between callers;
each answer says how old its device figures are.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional


class SystemSampler:
    def __init__(self, host: Any, interval: float = 5.0) -> None:
        import psutil

        self.host = host
        self.interval = interval
        self._lock = threading.Lock()
        self._devices: list[dict[str, Any]] = []
        self._taken = 0.0
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(percpu=True)  # the first call only sets the baseline

    def _refresh_devices(self) -> None:
        from voxfit.planning.planner import detect

        profile = detect(self.host)
        self._devices = [
            {"id": d.id, "family": d.family, "name": d.name, "utilization_percent": d.utilization_percent,
             "memory_total_bytes": d.memory_total_bytes, "memory_free_bytes": d.memory_free_bytes,
             "memory_used_bytes": (d.memory_total_bytes - d.memory_free_bytes)
             if d.memory_total_bytes is not None and d.memory_free_bytes is not None else None,
             "detected_by": d.detected_by}
            for d in profile.devices
        ]
        self._taken = time.monotonic()

    def sample(self) -> dict[str, Any]:
        """A snapshot (blocking up to one detection; call it from a worker thread)."""
        import psutil

        with self._lock:
            error: Optional[str] = None
            if time.monotonic() - self._taken >= self.interval:
                try:
                    self._refresh_devices()
                except Exception as exc:  # noqa: BLE001 - the CPU and RAM figures are still worth giving
                    from voxfit.errors import one_line

                    error = one_line(exc)
            age = time.monotonic() - self._taken if self._taken else None
            devices = list(self._devices)
        vm = psutil.virtual_memory()
        per_cpu = psutil.cpu_percent(percpu=True)
        out: dict[str, Any] = {
            "cpu": {"percent": round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else None, "per_cpu_percent": per_cpu,
                    "count": psutil.cpu_count()},
            "memory": {"total_bytes": vm.total, "available_bytes": vm.available, "used_percent": vm.percent},
            "process": {"rss_bytes": self._process.memory_info().rss},
            "devices": devices,
            "devices_age_seconds": round(age, 2) if age is not None else None,
            "note": f"devices as the plugins' detect hooks report them, refreshed at most every {self.interval:g} s",
        }
        if error:
            out["devices_error"] = error
        return out
