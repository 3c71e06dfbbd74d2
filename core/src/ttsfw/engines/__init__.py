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

# Fish Speech (OpenAudio S1) through fish-speech's own model classes on torch
# (ttsfw.engines.fish_torch). Plugins load it on their device with
# ttsfw.engines.fish_torch.load_fish_engine(...).
# fish-speech itself cannot be installed through an extra (its declared dependencies
# do not resolve), so the hint names the whole command; the README explains it.
FISH_INSTALL = (
    "pip install 'ttsfw[fish]' && pip install --no-deps fish-speech==0.1.0 descript-audiotools==0.7.2 "
    "descript-audio-codec==1.0.0 librosa==0.11.0 tensorboard==2.21.0"
)

register_engine(
    EngineInfo(
        backend="fish-torch",
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech"),
        extra="fish",
        description="fish-speech text-to-semantic transformer and codec on torch",
        metadata={"install_hint": FISH_INSTALL},
    )
)

# The same, with the codec decoder exported to ONNX (dynamo exporter, cached by
# checkpoint hash, verified against torch) and run on ONNX Runtime (CPU only).
register_engine(
    EngineInfo(
        backend="fish-torch+onnx-codec",
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech", "onnxruntime", "onnxscript"),
        extra="fish",
        description="fish-speech transformer on torch, codec decoder exported to ONNX Runtime",
        metadata={"install_hint": FISH_INSTALL + " && pip install 'ttsfw-cpu-onnx[fish-onnx]'"},
    )
)

# Fish Speech with the language model on torch and the codec decoder as a Core ML
# ML program (Apple only); the ttsfw-mps plugin converts, caches and loads it.
register_engine(
    EngineInfo(
        backend="fish-torch+coreml-codec",
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech", "coremltools"),
        extra="mps",
        description="fish-speech on torch (MPS) with the codec decoder converted to Core ML",
    )
)
