"""A stand-in for the ``pynvml`` module (nvidia-ml-py), backed by a dict describing one machine.

Only the NVML boundary is faked: the CUDA plugin's own code (probe, scoring,
env, sampler, loader) runs unchanged on top of it. Functions mirror the real
module's names, argument order, return shapes and error class (``NVMLError``
with an integer ``value``), including the calls a GPU may not support.

The machines below are the fixtures of the CUDA plugin's tests. Their figures
are each card's published specifications (memory size, bus width, compute
capability) and the memory clock ``nvidia-smi -q`` reports as "Max Clocks /
Memory" for it; free memory, utilisation and processes are made up to
represent a typical moment (a desktop's display, a busy neighbour).

``python tests/fake_pynvml.py`` rewrites tests/data/hardware/*.json from them
(the same profiles `voxfit detect --json` would print on those machines).
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any, Optional

MiB = 2**20
GiB = 2**30

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_CLOCK_MEM = 2
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPU_VIRTUALIZATION_MODE_NONE = 0
NVML_GPU_VIRTUALIZATION_MODE_VGPU = 2

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


def gpu(name: str, uuid: str, total_mib: int, free_gib: float, cc: tuple[int, int], bus: Optional[int],
        mem_clock: Optional[int], util: float = 0.0, processes: tuple = (), mig: Optional[list] = None,
        virtualization: int = NVML_GPU_VIRTUALIZATION_MODE_NONE) -> dict[str, Any]:
    return {"name": name, "uuid": uuid, "total": total_mib * MiB, "free": int(free_gib * GiB), "cc": cc,
            "bus": bus, "mem_clock": mem_clock, "util": util, "mem_util": min(100.0, util * 0.6),
            "processes": list(processes), "mig": mig, "virtualization": virtualization}


def host(os_name: str, cpu: str, physical: int, logical: int, ram_gib: int, free_ram_gib: float) -> dict[str, Any]:
    return {"os": os_name, "os_release": {"linux": "6.8.0", "windows": "10"}.get(os_name, ""), "arch": "x86_64",
            "python": "3.11.9", "cpu_model": cpu, "cores_physical": physical, "cores_logical": logical,
            "isa_flags": ["avx", "avx2", "fma", "f16c"], "memory_total_bytes": ram_gib * GiB,
            "memory_available_bytes": int(free_ram_gib * GiB)}


_4090 = dict(name="NVIDIA GeForce RTX 4090", total_mib=24564, cc=(8, 9), bus=384, mem_clock=10501)

MACHINES: dict[str, dict[str, Any]] = {
    "rtx3050-laptop": {
        "host": host("windows", "12th Gen Intel(R) Core(TM) i5-12450H", 8, 12, 16, 9.5),
        "driver": "551.86", "cuda": 12040, "triton": False,
        "gpus": [gpu("NVIDIA GeForce RTX 3050 Laptop GPU", "GPU-3a6e1c52-0f1d-4a4e-9d0b-3050aaaa0001", 4096, 3.7,
                     (8, 6), 128, 6001, util=4.0)],
    },
    "rtx3060": {
        "host": host("windows", "AMD Ryzen 5 5600X 6-Core Processor", 6, 12, 32, 22.0),
        "driver": "551.86", "cuda": 12040, "triton": False,
        "gpus": [gpu("NVIDIA GeForce RTX 3060", "GPU-8b1f0e77-2c4d-4f6a-8e3b-3060aaaa0001", 12288, 11.2, (8, 6), 192,
                     7501, util=2.0)],
    },
    "rtx4090": {
        "host": host("linux", "AMD Ryzen 9 7950X 16-Core Processor", 16, 32, 64, 50.0),
        "driver": "550.54.15", "cuda": 12040, "triton": True,
        "gpus": [gpu(**_4090, uuid="GPU-1c9d2f33-7a45-4b8e-a1f0-4090aaaa0001", free_gib=23.1, util=1.0)],
    },
    "v100": {
        "host": host("linux", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", 20, 40, 192, 170.0),
        "driver": "535.183.01", "cuda": 12020, "triton": True,
        "gpus": [gpu("Tesla V100-SXM2-16GB", "GPU-5e2a7b10-9c3d-4e1f-b2a4-0100aaaa0001", 16384, 15.6, (7, 0), 4096,
                     877)],
    },
    "a100-80gb": {
        "host": host("linux", "AMD EPYC 7763 64-Core Processor", 64, 128, 512, 480.0),
        "driver": "550.54.15", "cuda": 12040, "triton": True,
        "gpus": [gpu("NVIDIA A100-SXM4-80GB", "GPU-0d4c8e21-6b7a-4c2d-9f3e-a100aaaa0001", 81920, 79.2, (8, 0), 5120,
                     1593)],
    },
    "h100": {
        "host": host("linux", "Intel(R) Xeon(R) Platinum 8480+", 56, 112, 1024, 980.0),
        "driver": "550.54.15", "cuda": 12040, "triton": True,
        "gpus": [gpu("NVIDIA H100 80GB HBM3", "GPU-7f3b9a64-1e2d-4c5b-8a6f-h100aaaa0001", 81559, 78.9, (9, 0), 5120,
                     2619)],
    },
    "two-gpu-one-busy": {
        "host": host("linux", "AMD Ryzen Threadripper PRO 5975WX 32-Cores", 32, 64, 256, 200.0),
        "driver": "550.54.15", "cuda": 12040, "triton": True,
        # GPU 0 trains something else: 92% busy, 19.3 GiB held by one process.
        "gpus": [gpu(**_4090, uuid="GPU-2a1b3c4d-0000-4000-8000-4090bbbb0000", free_gib=4.6, util=92.0,
                     processes=[(4242, int(19.3 * GiB))]),
                 gpu(**_4090, uuid="GPU-2a1b3c4d-1111-4000-8000-4090bbbb0001", free_gib=23.1, util=0.0)],
    },
    "nvml-fails": {
        "host": host("linux", "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz", 8, 16, 32, 24.0),
        "driver": "550.54.15", "cuda": 12040, "triton": True,
        "init_error": NVML_ERROR_LIB_RM_VERSION_MISMATCH,  # driver updated, kernel module still the old one
        "gpus": [gpu("NVIDIA GeForce RTX 3070", "GPU-6c5d4e3f-2a1b-4c0d-9e8f-3070aaaa0001", 8192, 7.5, (8, 6), 256,
                     7001)],
    },
}


class _Handle:
    def __init__(self, data: dict[str, Any], index: int, mig_of: Optional["_Handle"] = None) -> None:
        self.data, self.index, self.mig_of = data, index, mig_of


class FakeNvml(types.ModuleType):
    """The fake module. ``gpus``/``system`` may be changed while in use (e.g. utilisation during synthesis)."""

    def __init__(self, machine: dict[str, Any]) -> None:
        super().__init__("pynvml")
        self.machine = copy.deepcopy(machine)
        self.gpus: list[dict[str, Any]] = self.machine["gpus"]
        self.init_count = 0
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        for name, value in globals().items():
            if name.startswith("NVML_"):
                setattr(self, name, value)
        self.NVMLError = NVMLError

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def _check(self) -> None:
        if self.init_count <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    # -- library ----------------------------------------------------------
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        error = self.machine.get("init_error")
        if error is not None:
            raise NVMLError(error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.machine["driver"]

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check()
        return self.machine["cuda"]

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return _Handle(self.gpus[index], index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._check()
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, g in enumerate(self.gpus):
            if g["uuid"] == uuid:
                return _Handle(g, i)
            for j, m in enumerate(g.get("mig") or []):
                if m["uuid"] == uuid:
                    return _Handle(m, j, mig_of=_Handle(g, i))
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    # -- per device ---------------------------------------------------------
    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._check()
        return handle.data["name"]

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._check()
        return handle.data["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> types.SimpleNamespace:
        self._check()
        d = handle.data
        return types.SimpleNamespace(total=d["total"], free=d["free"], used=d["total"] - d["free"])

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        self._check()
        return tuple((handle.mig_of.data if handle.mig_of else handle.data)["cc"])  # type: ignore[return-value]

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> types.SimpleNamespace:
        self._check()
        self._count("nvmlDeviceGetUtilizationRates")
        if handle.mig_of is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(gpu=handle.data["util"], memory=handle.data["mem_util"])

    def nvmlDeviceGetMemoryBusWidth(self, handle: _Handle) -> int:
        self._check()
        if handle.data.get("bus") is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return handle.data["bus"]

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock_type: int) -> int:
        self._check()
        if clock_type != NVML_CLOCK_MEM:
            return 2000
        if handle.data.get("mem_clock") is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return handle.data["mem_clock"]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[types.SimpleNamespace]:
        self._check()
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in handle.data.get("processes", [])]

    def nvmlDeviceGetVirtualizationMode(self, handle: _Handle) -> int:
        self._check()
        return handle.data.get("virtualization", NVML_GPU_VIRTUALIZATION_MODE_NONE)

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        self._check()
        if handle.data.get("mig") is None:
            if handle.data["cc"] < (8, 0):
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # pre-Ampere GPUs have no MIG at all
            return [NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_DISABLE]
        return [NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        self._check()
        return 7 if handle.data.get("mig") is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        self._check()
        migs = handle.data.get("mig") or []
        if index >= len(migs):
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # an empty MIG slot
        return _Handle(migs[index], index, mig_of=handle)


def build(machine: dict[str, Any] | str) -> FakeNvml:
    return FakeNvml(MACHINES[machine] if isinstance(machine, str) else machine)


def install(monkeypatch: Any, machine: dict[str, Any] | str) -> FakeNvml:
    """Put a fake pynvml in sys.modules for the duration of a test; return it to adjust or inspect."""
    fake = build(machine)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def profile_for(name: str, environ: Optional[dict[str, str]] = None):
    """The HardwareProfile `voxfit detect` would give on MACHINES[name]: host facts + the plugin's real probe."""
    from voxfit.models import AcceleratorDevice, HardwareProfile
    from voxfit.planning.hardware import merge
    from voxfit_cuda.nvml_probe import probe

    machine = MACHINES[name]
    h = machine["host"]
    base = HardwareProfile(**h, devices=[AcceleratorDevice(
        id="cpu", family="cpu", name=h["cpu_model"], memory_total_bytes=h["memory_total_bytes"],
        memory_free_bytes=h["memory_available_bytes"], detected_by="cpu_onnx",
        capabilities={"cores_physical": h["cores_physical"], "cores_logical": h["cores_logical"]})])
    detection = probe(build(machine), environ or {})
    if detection is not None:
        for device in detection.devices:
            device.detected_by = "cuda"
        detection.notes = [f"cuda: {n}" for n in detection.notes]
        if "triton" in detection.flags:
            detection.flags["triton"] = machine["triton"]  # what that machine has, not this one
    return merge(base, [detection] if detection else [])


HARDWARE_DIR = Path(__file__).resolve().parent / "data" / "hardware"


def profile_json(name: str) -> str:
    return json.dumps(profile_for(name).model_dump(mode="json"), indent=2) + "\n"


if __name__ == "__main__":
    HARDWARE_DIR.mkdir(parents=True, exist_ok=True)
    for machine_name in MACHINES:
        (HARDWARE_DIR / f"{machine_name}.json").write_text(profile_json(machine_name))
        print(f"wrote {HARDWARE_DIR / machine_name}.json")
