"""Fish Speech (OpenAudio S1) as a default plugin of the core.

It registers the fish engines and reads fish checkpoints through the same
hooks a third party's engine plugin uses (``register_engines``,
``resolve_model``, ``prepare_env``, ``disable_training_artifacts``); hardware
plugins place it on their devices by loading ``fish-torch`` through the
engine registry. The core loads it like an entry point named ``fish``
(``voxfit plugins`` lists it, ``-p no:fish`` blocks it). Nothing here imports
torch: the adapters (``fish_torch``, ``fish_codec``) are imported by the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field

from voxfit.engine import EngineInfo, innermost
from voxfit.hookspecs import hookimpl
from voxfit.models import EnvChange, ModelSpec, Proposal

VOXFIT_HOOK_API = "2.0"

# fish-speech itself cannot be installed through an extra (its declared dependencies
# do not resolve), so the hint names the whole command; the README explains it.
INSTALL_HINT = (
    "pip install 'voxfit[fish]' && pip install --no-deps fish-speech==0.1.0 descript-audiotools==0.7.2 "
    "descript-audio-codec==1.0.0 librosa==0.11.0 tensorboard==2.21.0"
)
BACKENDS = ("fish-torch", "fish-torch+onnx-codec")
LOADER = "voxfit.engines.fish.engine:load_fish_engine"


class FishOptions(BaseModel):
    """Voice options of the Fish Speech engines (``voxfit run`` flags, ``-O key=value``, the server)."""

    model_config = ConfigDict(extra="forbid")

    reference_audio: Optional[Path] = Field(default=None, description="A 5-10 s clip of the voice to clone.")
    reference_text: Optional[str] = Field(default=None, max_length=2000, description="What the reference clip says.")
    # The seeds torch.manual_seed takes (a signed or unsigned 64-bit integer); past them it raises.
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1, description="Sampling seed, for repeatable output.")
    max_new_tokens: Optional[int] = Field(default=None, ge=1, le=32768, description="Cap of semantic tokens per sentence.")
    temperature: Optional[float] = Field(default=None, gt=0.0, le=2.0, description="Sampling temperature.")
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    repetition_penalty: Optional[float] = Field(default=None, ge=1.0, le=2.0, description="Penalty for repeats.")


@hookimpl
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    register(EngineInfo(
        backend="fish-torch",
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech"),
        extra="fish",
        install_hint=INSTALL_HINT,
        description="Fish Speech checkpoints (config.json, model.pth, codec.pth) on torch",
        options=FishOptions,
        loader=LOADER,
    ))
    # The same, with the codec decoder exported to ONNX (dynamo exporter, cached by
    # checkpoint hash, verified against torch) and run on ONNX Runtime (CPU only).
    register(EngineInfo(
        backend="fish-torch+onnx-codec",
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech", "onnxruntime", "onnxscript"),
        extra="fish",
        install_hint=INSTALL_HINT + " && pip install 'voxfit-cpu-onnx[fish-onnx]'",
        description="Fish Speech on torch with the codec decoder on ONNX Runtime",
        options=FishOptions,
        loader=LOADER,
    ))


@hookimpl
def resolve_model(reference: str) -> Optional[ModelSpec]:
    from voxfit.engines.fish import spec as fish

    return fish.read(Path(reference).expanduser())


def _runs_fish(backend: str) -> bool:
    return backend.startswith("fish-torch")


@hookimpl
def prepare_env(proposal: Proposal) -> Optional[list[EnvChange]]:
    # Whichever plugin placed a fish engine, the engine's own process settings apply.
    if not _runs_fish(proposal.engine):
        return None
    return [
        EnvChange(
            kind="set_env",
            key="TQDM_DISABLE",
            value="1",
            reason="fish-speech draws a tqdm progress bar for every sentence; voxfit reports its own metrics",
        )
    ]


@hookimpl
def disable_training_artifacts(engine: Any) -> Optional[list[str]]:
    # A plugin's wrapper around the engine (the CUDA sampler) is looked through.
    if not _runs_fish(str(getattr(innermost(engine), "backend", ""))):
        return None
    from voxfit.engines.fish.engine import disable_training_artifacts as disable

    return disable(engine)

