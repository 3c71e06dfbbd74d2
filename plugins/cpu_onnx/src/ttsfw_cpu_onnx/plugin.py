"""ttsfw hooks for CPUs."""

from __future__ import annotations

import importlib.util

from ttsfw import hookimpl
from ttsfw.models import AcceleratorDevice, Detection, HardwareProfile

TTSFW_HOOK_API = "1.0"


@hookimpl
def detect(host: HardwareProfile) -> Detection:
    """The CPU is always present; describe what matters to ONNX Runtime and torch on it."""
    caps: dict[str, object] = {
        "cores_physical": host.cores_physical,
        "cores_logical": host.cores_logical,
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
    }
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"):
        if flag in host.isa_flags:
            caps[flag] = True
    cpu = AcceleratorDevice(
        id="cpu",
        family="cpu",
        name=host.cpu_model,
        memory_total_bytes=host.memory_total_bytes,
        memory_free_bytes=host.memory_available_bytes,
        capabilities=caps,  # type: ignore[arg-type]
    )
    return Detection(devices=[cpu])
