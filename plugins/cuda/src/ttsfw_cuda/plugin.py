"""ttsfw hooks for NVIDIA GPUs, detected through NVML (never through torch)."""

from __future__ import annotations

from typing import Optional

from ttsfw import hookimpl
from ttsfw.models import AcceleratorDevice, Detection

TTSFW_HOOK_API = "1.0"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@hookimpl
def detect() -> Optional[Detection]:
    try:
        import pynvml
    except ImportError:
        return Detection(notes=["nvidia-ml-py (pynvml) is not installed; NVIDIA GPUs cannot be detected"])
    try:
        pynvml.nvmlInit()
    except Exception:
        return None  # no driver, no GPU: nothing to report
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            devices.append(
                AcceleratorDevice(
                    id=f"cuda:{index}",
                    family="cuda",
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_bytes=int(memory.total),
                    memory_free_bytes=int(memory.free),
                    capabilities={"compute_capability": f"{major}.{minor}"},
                )
            )
        return Detection(devices=devices)
    finally:
        pynvml.nvmlShutdown()
