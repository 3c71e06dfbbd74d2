"""An engine plugin: its own model format (``.beep`` files), an engine that beeps, and a voice option.

A ``.beep`` file is a small JSON object::

    {"format": "beep", "pitch_hz": 440, "sample_rate": 16000}

The engine "speaks" one short beep per word at the model's pitch; the voice
option ``pitch_hz`` (``voxfit run -O pitch_hz=880``) changes it. It imports
nothing but ``voxfit.sdk`` and pydantic, which the core already needs.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from voxfit.sdk import (
    AudioChunk,
    EngineInfo,
    EngineLoadError,
    Estimate,
    HardwareProfile,
    ModelError,
    ModelSpec,
    Proposal,
    UsageError,
    hookimpl,
    read_small_text,
)

VOXFIT_HOOK_API = "2.1"  # the hook API this plugin was built against
NAME = "beep"  # must match the entry-point name
ENGINE = "beep"  # the backend name proposals use
FAMILY = "beep"  # the model family the engine runs
BEEP_SECONDS, GAP_SECONDS = 0.1, 0.05  # per word


class BeepFile(BaseModel):
    """What a .beep file holds."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["beep"]
    pitch_hz: float = Field(default=440.0, ge=20.0, le=20000.0)
    sample_rate: int = Field(default=16000, ge=8000, le=48000)


class BeepOptions(BaseModel):
    """The voice options of the beep engine (``-O pitch_hz=880``)."""

    model_config = ConfigDict(extra="forbid")

    pitch_hz: float = Field(default=440.0, ge=20.0, le=20000.0, description="Pitch of the beeps in Hz.")


class BeepEngine:
    """The smallest thing that satisfies voxfit.sdk.Engine, and Configurable."""

    backend = ENGINE

    def __init__(self, sample_rate: int, pitch_hz: float, device: str = "cpu") -> None:
        self.sample_rate = sample_rate
        self.voice_pitch_hz = self.pitch_hz = pitch_hz
        self.device = device

    def configure(self, options: BeepOptions) -> None:
        # Only the options the user set apply; the others return to the voice's own.
        pitch = options.pitch_hz if "pitch_hz" in options.model_fields_set else self.voice_pitch_hz
        if pitch >= self.sample_rate / 2:
            raise UsageError(f"pitch_hz={pitch:g} is too high for a {self.sample_rate} Hz voice "
                             f"(below {self.sample_rate // 2})")
        self.pitch_hz = pitch

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        rate = self.sample_rate
        beep = [int(8000 * math.sin(2 * math.pi * self.pitch_hz * i / rate)) for i in range(int(BEEP_SECONDS * rate))]
        gap = [0] * int(GAP_SECONDS * rate)
        samples: list[int] = []
        for _ in text.split():
            samples += beep + gap
        yield AudioChunk(pcm=struct.pack(f"<{len(samples)}h", *samples), sample_rate=rate, text=text)

    def inference_modules(self) -> list:
        return []  # no torch modules: nothing for the core's invariant check to inspect

    def close(self) -> None:
        pass


def load(model: ModelSpec, device: str = "cpu") -> BeepEngine:
    """The loader registered as ``voxfit_beep:load``: other plugins call it to place the engine on their device."""
    if model.family != FAMILY:
        raise EngineLoadError(f"the beep engine runs beep models, not {model.family} {model.name}")
    return BeepEngine(model.sample_rate or 16000, float(model.properties.get("pitch_hz") or 440.0), device)


@hookimpl
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    register(EngineInfo(
        backend=ENGINE,
        families=frozenset({FAMILY}),
        description="beep models (.beep files): one beep per word, for testing the pipeline",
        options=BeepOptions,
        loader="voxfit_beep:load",  # load(model, device="cpu") -> engine
    ))


@hookimpl
def resolve_model(reference: str) -> Optional[ModelSpec]:
    path = Path(reference).expanduser()
    if path.suffix != ".beep":
        return None  # not ours: another plugin's format may know it
    try:
        beep = BeepFile.model_validate(json.loads(read_small_text(path)))
    except (OSError, ValueError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
        raise ModelError(f"{path} is not a valid beep file: {detail}") from None
    return ModelSpec(family=FAMILY, name=path.stem, path=path, sample_rate=beep.sample_rate,
                     properties={"pitch_hz": beep.pitch_hz})


@hookimpl(trylast=True)
def default_model() -> Optional[ModelSpec]:
    # A fallback: trylast lets any real voice's default answer first.
    return ModelSpec(family=FAMILY, name="beep-440", sample_rate=16000, properties={"pitch_hz": 440.0},
                     source="the beep plugin's default")


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile) -> Optional[list[Proposal]]:
    if model.family != FAMILY:
        return None  # the beep engine runs beep models only
    return [
        Proposal(
            device="cpu",
            device_family="cpu",
            engine=ENGINE,
            precision="n/a",  # no neural weights
            threads=1,
            estimate=Estimate(rtf=0.01, peak_memory_bytes=1 << 20),
            score=100.0,  # 1 / RTF, on the scale every plugin shares
            reasons=[f"beeps once per word at {model.properties.get('pitch_hz')} Hz on any {hardware.arch} CPU"],
        )
    ]


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec) -> BeepEngine:
    # Called for this plugin's own proposals only.
    return load(model, device=proposal.device)


@hookimpl
def disable_training_artifacts(engine: object) -> Optional[list[str]]:
    if not isinstance(engine, BeepEngine):
        return None  # an engine we do not know: leave it to its owner
    return ["beep engine: nothing to disable (no trainable state)"]
