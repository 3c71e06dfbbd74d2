"""voxfit: a hardware-aware runtime for neural text-to-speech.

Importing this package is cheap on purpose (pluggy and nothing heavy), and
commands that only detect, plan or list never pull in torch or onnxruntime.

* :class:`Session` (``voxfit.Session()``) is the Python API: plan once, load
  once, speak many.
* Plugins import :mod:`voxfit.sdk`, and nothing else from the core.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from voxfit.hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.2.0"

_LAZY = {
    "AcceleratorDevice": "models",
    "Detection": "models",
    "EnvChange": "models",
    "Estimate": "models",
    "HardwareProfile": "models",
    "MemoryEstimate": "models",
    "ModelSpec": "models",
    "Plan": "models",
    "Proposal": "models",
    "Settings": "settings",
    "Session": "speaking.session",
    "Speech": "speaking.session",
    "Report": "speaking.session",
    "AudioChunk": "engine",
    "Engine": "engine",
    "EngineLoadError": "errors",
    "PluginUnavailable": "errors",
    "VoxfitError": "errors",
}

__all__ = ["HOOK_API_VERSION", "hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'voxfit' has no attribute {name!r}")
