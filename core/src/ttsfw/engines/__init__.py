"""Engine adapters shipped with the core.

Each adapter module imports its framework (onnxruntime, torch, fish_speech)
only when an engine is built, never at import of this package. This table
is what the ranker knows about a backend before anything is loaded: which
model families it runs and which modules it needs.
"""

from __future__ import annotations

from typing import Optional

from ..engine import EngineInfo

KNOWN_ENGINES: dict[str, EngineInfo] = {}


def register_engine(info: EngineInfo) -> None:
    KNOWN_ENGINES[info.backend] = info


def engine_info(backend: str) -> Optional[EngineInfo]:
    return KNOWN_ENGINES.get(backend)


# Piper voices on ONNX Runtime (adapter: ttsfw.engines.piper_onnx, imported only by load_engine).
register_engine(
    EngineInfo(
        backend="piper-onnx",
        families=frozenset({"piper"}),
        requires=("onnxruntime", "piper"),
        description="Piper (VITS) voices on ONNX Runtime, phonemized by piper-tts/espeak-ng",
        extra="cpu-onnx",
    )
)
