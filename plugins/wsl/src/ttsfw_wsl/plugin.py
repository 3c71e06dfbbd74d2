"""ttsfw hooks for Windows Subsystem for Linux."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ttsfw import hookimpl
from ttsfw.models import Detection

TTSFW_HOOK_API = "1.0"


@hookimpl
def detect() -> Optional[Detection]:
    try:
        version = Path("/proc/version").read_text(errors="replace").lower()
    except OSError:
        return None
    if "microsoft" not in version:
        return None
    kind = "wsl2" if "wsl2" in version or Path("/dev/dxg").exists() else "wsl1"
    return Detection(flags={"wsl": kind})
