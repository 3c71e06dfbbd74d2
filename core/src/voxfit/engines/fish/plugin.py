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

from voxfit.engines.fish.info import DECODE, INSTALL_HINT, LOADER, FishOptions
from voxfit.sdk import EngineInfo, EnvChange, ModelSpec, Proposal, hookimpl, innermost

VOXFIT_HOOK_API = "2.0"

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
        decode=DECODE,
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
        decode=DECODE,  # the same decoding loop; only the codec differs
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

