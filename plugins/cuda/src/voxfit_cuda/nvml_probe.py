"""Everything the plugin knows about NVIDIA GPUs, read through NVML (``pynvml``), never through torch.

NVML is the driver's management library: it answers in milliseconds, needs
no CUDA context and never allocates GPU memory, so ``voxfit detect`` and
``voxfit plan`` stay light. It enumerates GPUs in PCI bus order (the order
``nvidia-smi`` shows) and ignores ``CUDA_VISIBLE_DEVICES``; this module
applies that variable itself, with CUDA's own rules, so a GPU the user hid
is never proposed.

Device ids are ``cuda:N`` with N the NVML (= nvidia-smi) index, and
``cuda:N:migM`` for MIG instance M of GPU N. They are stable names for the
plan; the ordinal torch uses inside the process is decided at load time
(see :mod:`voxfit_cuda.loader`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from voxfit.sdk import AcceleratorDevice, Detection

GiB = 2**30

# A GPU counts as busy with other work above these thresholds (utilisation
# sampled once by NVML over its last period; memory held by anything else).
BUSY_UTILIZATION_PERCENT = 25.0
BUSY_MEMORY_SHARE = 0.25

# NVML error codes after which there is simply no NVIDIA GPU to talk to: no
# libnvidia-ml, or no kernel driver. Anything else (driver/library version
# mismatch, no permission, GPU lost...) means a driver IS there but NVML
# failed, which the user should hear about.
_ABSENT_CODES = {9, 12}  # NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND
_MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
_CLOCK_MEM = 2  # NVML_CLOCK_MEM
_VIRTUALIZATION_VGPU = 2  # NVML_GPU_VIRTUALIZATION_MODE_VGPU: a vGPU inside a virtual machine


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bandwidth_gbps(bus_width_bits: int, memory_clock_mhz: int) -> float:
    """Peak memory bandwidth in GB/s (10^9 bytes) from what NVML reports.

    bus width x memory clock x 2 (double data rate) / 8 bits. NVML's maximum
    memory clock is already the rate this formula wants for GDDR6, GDDR6X and
    HBM2/2e/3 alike (RTX 3060: 192 bit x 7501 MHz = 360 GB/s; H100 SXM:
    5120 bit x 2619 MHz = 3352 GB/s), so no per-generation multiplier is
    applied; tests hold six cards within 10% of their published figures.
    """
    return round(bus_width_bits * memory_clock_mhz * 2 / 8 / 1000, 1)


def cuda_version_text(version: int) -> str:
    """NVML's integer CUDA driver version (12040) as people write it (12.4)."""
    return f"{version // 1000}.{(version % 1000) // 10}"


@dataclass
class VisibleDevices:
    """What ``CUDA_VISIBLE_DEVICES`` lets through, parsed as CUDA parses it."""

    entries: Optional[list[str]]  # None: variable unset, everything visible
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "VisibleDevices":
        raw = environ.get("CUDA_VISIBLE_DEVICES")
        if raw is None:
            return cls(None)
        entries = [part.strip() for part in raw.split(",")]
        if raw.strip() == "":
            entries = []
        return cls(entries)

    def admits(self, index: int, uuid: str, mig_uuid: Optional[str] = None, known_uuids: tuple = ()) -> bool:
        if self.entries is None:
            return True
        for entry in self.entries:
            # CUDA stops at the first entry that names no device: what follows is ignored.
            if not _valid_entry(entry, known_uuids):
                break
            if mig_uuid is not None:
                if entry.startswith("MIG-") and mig_uuid.startswith(entry):
                    return True
                if entry.startswith("GPU-") and uuid.startswith(entry) or entry == str(index):
                    return True  # a MIG-enabled GPU named whole exposes its instances
                continue
            if entry == str(index) or (entry.startswith("GPU-") and uuid.startswith(entry)):
                return True
        return False


def _valid_entry(entry: str, known_uuids: tuple) -> bool:
    if entry.isdigit():
        return True
    if entry.startswith(("GPU-", "MIG-")) and len(entry) > 4:
        return any(u.startswith(entry) for u in known_uuids)
    return False


def _try(fn: Any, *args: Any, default: Any = None) -> Any:
    """NVML calls that a GPU may not support (NOT_SUPPORTED on laptops, MIG, vGPU) fall back quietly."""
    try:
        return fn(*args)
    except Exception:
        return default


def _processes(nvml: Any, handle: Any) -> tuple[int, int, str]:
    procs = _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle, default=[]) or []
    used = 0
    listed = []
    for p in procs:
        mem = getattr(p, "usedGpuMemory", None)
        if isinstance(mem, int):
            used += mem
        listed.append(f"pid {p.pid}" + (f" ({mem / GiB:.1f} GiB)" if isinstance(mem, int) else ""))
    return len(procs), used, ", ".join(listed)


def _gpu(nvml: Any, index: int, handle: Any, driver: str, cuda: str) -> tuple[AcceleratorDevice, list[Any]]:
    name = text(nvml.nvmlDeviceGetName(handle))
    uuid = text(_try(nvml.nvmlDeviceGetUUID, handle, default=""))
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    caps: dict[str, Any] = {
        "compute_capability": f"{major}.{minor}",
        "bf16": (major, minor) >= (8, 0),
        "uuid": uuid,
        "nvml_index": index,
        "driver_version": driver,
        "cuda_driver_version": cuda,
    }
    bus = _try(nvml.nvmlDeviceGetMemoryBusWidth, handle)
    clock = _try(nvml.nvmlDeviceGetMaxClockInfo, handle, getattr(nvml, "NVML_CLOCK_MEM", _CLOCK_MEM))
    if bus and clock:
        caps.update(memory_bus_width_bits=int(bus), memory_clock_mhz=int(clock),
                    bandwidth_gbps=bandwidth_gbps(int(bus), int(clock)))
    util = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
    if util is not None:
        caps["memory_utilization_percent"] = float(util.memory)
    count, used_by_procs, listed = _processes(nvml, handle)
    caps["processes"] = count
    caps["process_memory_bytes"] = used_by_procs
    if listed:
        caps["process_list"] = listed
    flags = []
    if _try(nvml.nvmlDeviceGetVirtualizationMode, handle) == _VIRTUALIZATION_VGPU:
        flags.append("vgpu")
    mig_handles: list[Any] = []
    mode = _try(nvml.nvmlDeviceGetMigMode, handle)
    if mode and mode[0] == _MIG_ENABLED:
        flags.append("mig")
        caps["mig_mode"] = "enabled"
        for slot in range(_try(nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0) or 0):
            mig = _try(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is not None:
                mig_handles.append((slot, mig))
    elif mode is not None:
        caps["mig_mode"] = "disabled"
    total, free = int(memory.total), int(memory.free)
    utilization = float(util.gpu) if util is not None else None
    if (utilization or 0) >= BUSY_UTILIZATION_PERCENT or (total - free) >= BUSY_MEMORY_SHARE * total:
        flags.append("busy")
    device = AcceleratorDevice(
        id=f"cuda:{index}", family="cuda", index=index, name=name, memory_total_bytes=total,
        memory_free_bytes=free, utilization_percent=utilization, capabilities=caps, flags=flags,
    )
    return device, mig_handles


def _mig(nvml: Any, parent: AcceleratorDevice, slot: int, handle: Any) -> AcceleratorDevice:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    caps = dict(parent.capabilities)
    for key in ("processes", "process_memory_bytes", "process_list", "memory_utilization_percent", "mig_mode"):
        caps.pop(key, None)
    total = int(memory.total)
    caps["uuid"] = text(_try(nvml.nvmlDeviceGetUUID, handle, default=""))
    caps["mig_parent"] = parent.id
    if "bandwidth_gbps" in caps and parent.memory_total_bytes:
        # A MIG instance owns a fixed share of the memory slices, and with them that share of the bandwidth.
        caps["bandwidth_gbps"] = round(float(caps["bandwidth_gbps"]) * total / parent.memory_total_bytes, 1)
    return AcceleratorDevice(
        id=f"{parent.id}:mig{slot}", family="cuda", index=parent.index,
        name=text(_try(nvml.nvmlDeviceGetName, handle, default=f"{parent.name} MIG {slot}")),
        memory_total_bytes=total, memory_free_bytes=int(memory.free),
        utilization_percent=None,  # NVML does not report utilisation per MIG instance
        capabilities=caps, flags=["mig-instance"] + [f for f in parent.flags if f == "vgpu"],
    )


def triton_importable() -> bool:
    """Whether Triton (torch.compile's GPU code generator) is installed here; found, never imported."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def probe(nvml: Any, environ: Mapping[str, str]) -> Optional[Detection]:
    """Query NVML for every GPU (and MIG instance) that CUDA_VISIBLE_DEVICES leaves visible.

    Returns None when there is no NVIDIA driver or library at all (not an
    error), a Detection with only a note when a driver is present but NVML
    fails, and otherwise the visible devices.
    """
    try:
        nvml.nvmlInit()
    except Exception as exc:
        code = getattr(exc, "value", None)
        if code in _ABSENT_CODES or not isinstance(code, int):
            return None
        return Detection(
            flags={"nvml": f"failed: {text(exc).rstrip('.')}"},
            notes=[
                f"an NVIDIA driver seems present but NVML failed ({text(exc).rstrip('.')}); no GPU can be planned for. "
                "A driver/library version mismatch is usually fixed by a reboot after a driver update"
            ],
        )
    try:
        driver = text(_try(nvml.nvmlSystemGetDriverVersion, default="unknown"))
        cuda_int = _try(nvml.nvmlSystemGetCudaDriverVersion)
        cuda = cuda_version_text(int(cuda_int)) if cuda_int else "unknown"
        found, mig_devices = _all_devices(nvml, driver, cuda)
    finally:
        _try(nvml.nvmlShutdown)
    devices = _visible(found, mig_devices, VisibleDevices.from_environ(environ))
    flags: dict[str, Any] = {"triton": triton_importable()}
    if devices:
        flags["nvidia_driver"] = driver
        flags["cuda_driver"] = cuda
    return Detection(devices=devices, flags=flags, notes=_notes(found, mig_devices, devices, environ))


def _all_devices(nvml: Any, driver: str, cuda: str) -> tuple[list[AcceleratorDevice], list[AcceleratorDevice]]:
    """Every GPU NVML sees (one it cannot read is listed as such) and every MIG instance."""
    found: list[AcceleratorDevice] = []
    migs: list[tuple[AcceleratorDevice, int, Any]] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            device, mig_handles = _gpu(nvml, index, handle, driver, cuda)
        except Exception as exc:  # one broken GPU (e.g. "GPU is lost") must not hide the others
            found.append(AcceleratorDevice(id=f"cuda:{index}", family="cuda", index=index,
                                           name=f"unreadable GPU ({text(exc)})", flags=["unreadable"]))
            continue
        found.append(device)
        migs.extend((device, slot, h) for slot, h in mig_handles)
    return found, [_mig(nvml, parent, slot, h) for parent, slot, h in migs]


def _visible(found: list[AcceleratorDevice], mig_devices: list[AcceleratorDevice],
             visible: VisibleDevices) -> list[AcceleratorDevice]:
    known = tuple(str(d.capabilities.get("uuid", "")) for d in found + mig_devices)
    devices = [d for d in found if visible.admits(d.index, str(d.capabilities.get("uuid", "")), known_uuids=known)]
    for mig in mig_devices:
        parent = next(d for d in found if d.id == mig.capabilities["mig_parent"])
        if visible.admits(parent.index, str(parent.capabilities.get("uuid", "")),
                          mig_uuid=str(mig.capabilities["uuid"]), known_uuids=known):
            devices.append(mig)
    return devices


def _notes(found: list[AcceleratorDevice], mig_devices: list[AcceleratorDevice], devices: list[AcceleratorDevice],
           environ: Mapping[str, str]) -> list[str]:
    visible = VisibleDevices.from_environ(environ)
    notes = []
    hidden = len(found) + len(mig_devices) - len(devices)
    if visible.entries is not None and hidden:
        value = environ.get("CUDA_VISIBLE_DEVICES", "")
        notes.append(f"CUDA_VISIBLE_DEVICES={value!r} hides {hidden} of {len(found) + len(mig_devices)} "
                     "NVIDIA device(s); only the visible ones are planned for")
    if (visible.entries and any(e.isdigit() for e in visible.entries)
            and environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and len({d.name for d in found}) > 1):
        notes.append("CUDA_VISIBLE_DEVICES uses indices without CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA may order "
                     "these different GPUs fastest-first, unlike nvidia-smi; indices were read in nvidia-smi order")
    notes += [f"{d.id} has MIG enabled: CUDA work runs only on its MIG instances" for d in devices if "mig" in d.flags]
    return notes
