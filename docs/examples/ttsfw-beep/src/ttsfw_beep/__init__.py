"""A complete minimal ttsfw plugin: it "speaks" one short beep per word.

It implements every hook so that it can serve as a template; a real plugin
implements only those it needs.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Iterator, Optional

from ttsfw import hookimpl
from ttsfw.engine import AudioChunk
from ttsfw.errors import EngineLoadError
from ttsfw.models import Detection, EnvChange, Estimate, HardwareProfile, ModelSpec, Proposal

TTSFW_HOOK_API = "1.0"  # the hook API this plugin was built against
NAME = "beep"  # must match the entry-point name


class BeepEngine:
    """The smallest thing that satisfies ttsfw.engine.Engine."""

    backend = "beep"

    def __init__(self, sample_rate: int = 16000, pitch_hz: float = 440.0) -> None:
        self.sample_rate = sample_rate
        self.pitch_hz = pitch_hz
        self.closed = False

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        beep = [int(8000 * math.sin(2 * math.pi * self.pitch_hz * i / self.sample_rate)) for i in range(1600)]
        gap = [0] * 800
        samples: list[int] = []
        for _ in text.split():
            samples += beep + gap
        yield AudioChunk(pcm=struct.pack(f"<{len(samples)}h", *samples), sample_rate=self.sample_rate, text=text)

    def inference_modules(self) -> list:
        return []  # no torch modules: nothing for the core's invariant check to inspect

    def close(self) -> None:
        self.closed = True


@hookimpl
def detect(host: HardwareProfile) -> Optional[Detection]:
    # A real plugin probes its hardware here, cheaply. The CPU is reported by
    # the cpu_onnx plugin, so a beeper adds only a note.
    return Detection(notes=[f"beep can run on any {host.arch} CPU"])


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile) -> list[Proposal]:
    return [
        Proposal(
            device="cpu",
            device_family="cpu",
            engine="beep",
            threads=1,
            estimate=Estimate(rtf=0.001, peak_memory_bytes=1 << 20),
            # A demo must never win against a real voice: score it low and say why.
            score=0.01,
            reasons=[f"beeps once per word instead of speaking {model.name}; for testing the pipeline only"],
        )
    ]


@hookimpl
def prepare_env(proposal: Proposal) -> Optional[list[EnvChange]]:
    if proposal.plugin != NAME:
        return None
    return [EnvChange(kind="set_env", key="TTSFW_BEEP_ACTIVE", value="1", reason="tells child processes a beeper runs")]


@hookimpl
def load_engine(proposal: Proposal) -> Optional[BeepEngine]:
    if proposal.plugin != NAME:
        return None  # not ours: let the owner load it
    if os.environ.get("TTSFW_BEEP_FAIL"):
        raise EngineLoadError("TTSFW_BEEP_FAIL is set")  # the core falls back to the next proposal
    return BeepEngine()


@hookimpl
def disable_training_artifacts(engine: object) -> Optional[list[str]]:
    if not isinstance(engine, BeepEngine):
        return None
    return ["beep engine: nothing to disable (no trainable state)"]
