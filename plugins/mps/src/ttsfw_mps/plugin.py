"""ttsfw hooks for Apple Silicon GPUs (Metal Performance Shaders)."""

from __future__ import annotations

import platform
from typing import Optional

from ttsfw import hookimpl
from ttsfw.models import AcceleratorDevice, Detection

TTSFW_HOOK_API = "1.0"


@hookimpl
def detect() -> Optional[Detection]:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    return Detection(devices=[AcceleratorDevice(id="mps", family="mps", name="Apple Silicon GPU")])
