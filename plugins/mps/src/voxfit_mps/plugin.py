"""voxfit hooks for Apple Silicon GPUs (Metal Performance Shaders).

* plan_inputs   -> the macOS version file and the watermark variables prepare_env keeps
* detect        -> :mod:`voxfit_mps.sysinfo` (platform, sysctl, ioreg, vm_stat; torch only in a child process)
* score_config  -> :mod:`voxfit_mps.scoring` (fp16, unified-memory fit, bandwidth-based speed)
* prepare_env   -> :mod:`voxfit_mps.env`     (spawn, MPS fallback, allocator watermarks)
* load_engine   -> fish-torch on "mps", optionally with :mod:`voxfit_mps.coreml_codec`
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from voxfit.sdk import (
    AcceleratorDevice,
    Detection,
    DeviceFamilyInfo,
    EngineInfo,
    EngineLoadError,
    EnvChange,
    HardwareProfile,
    ModelSpec,
    PlanInputs,
    Proposal,
    Registry,
    ReplaceableDecoder,
    Settings,
    hookimpl,
    innermost,
)

from . import env, scoring, sysinfo
from .proposal_options import MpsOptions

VOXFIT_HOOK_API = "2.1"
NAME = "mps"
PROPOSAL_OPTIONS = MpsOptions


@hookimpl
def register_device_families(register: Callable[[DeviceFamilyInfo], None]) -> None:
    register(DeviceFamilyInfo(name="mps", description="Apple Silicon GPUs through Metal Performance Shaders"))


@hookimpl
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    # Fish Speech with the language model on torch (MPS) and the codec decoder as a
    # Core ML ML program; this plugin converts, caches and attaches it.
    register(EngineInfo(
        backend=scoring.COREML_ENGINE,
        families=frozenset({"fish"}),
        requires=("torch", "fish_speech", "coremltools"),
        extra="mps",
        description="Fish Speech on torch (MPS) with the codec decoder converted to Core ML",
        variant_of="fish-torch",  # the same voice options: only the decoder differs
        loader="voxfit_mps.plugin:load_with_coreml_codec",
    ))


@hookimpl
def plan_inputs() -> PlanInputs:
    # The chip, its cores and memory are the machine's own (the core keys plans on those); what can change is
    # the macOS version (MPS needs 12.3+; platform.mac_ver reads this file) and the watermarks a user sets.
    return PlanInputs(environ=list(env.WATERMARK_VARIABLES),
                      paths=["/System/Library/CoreServices/SystemVersion.plist"])


@hookimpl
def detect() -> Optional[Detection]:
    if not sysinfo.is_mac():
        return None
    if not sysinfo.is_apple_silicon():
        return Detection(notes=["Intel Mac: MPS needs Apple Silicon (M1 or later); models run on the CPU"])
    mac = sysinfo.probe()
    caps: dict[str, Any] = {
        "chip": mac.chip or mac.brand,
        "gpu_cores": mac.gpu_cores,
        "performance_cores": mac.performance_cores,
        "efficiency_cores": mac.efficiency_cores,
        "unified_memory": True,
        "macos": mac.macos,
        "mps_available": mac.mps_available,
        "mps_status": mac.notes[-1],
    }
    if mac.bandwidth is not None:
        caps["bandwidth_gbps"] = mac.bandwidth.bandwidth_gbps
        caps["bandwidth_source"] = mac.bandwidth.reason
    name = f"{mac.brand}" + (f" ({mac.gpu_cores}-core GPU)" if mac.gpu_cores else "")
    device = AcceleratorDevice(
        id="mps", family="mps", name=name,
        memory_total_bytes=mac.memory_total_bytes, memory_free_bytes=mac.memory_available_bytes,
        capabilities={k: v for k, v in caps.items() if v is not None}, flags=["unified-memory"],
    )
    return Detection(devices=[device], flags={"apple_silicon": mac.chip or True}, notes=mac.notes)


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile, settings: Settings, engines: Registry) -> list[Proposal]:
    return scoring.propose_all(model, hardware, settings, engines)


@hookimpl
def prepare_env(proposal: Proposal) -> list[EnvChange]:
    return env.env_changes(proposal, os.environ)


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Optional[Any]:
    if proposal.engine == scoring.COREML_ENGINE:
        return load_with_coreml_codec(proposal, model, settings, engines)
    return _load_fish(proposal, model, settings, engines)


def _load_fish(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Any:
    try:
        load_fish_engine = engines.loader("fish-torch")
    except (LookupError, ImportError) as exc:
        raise EngineLoadError(f"the Fish Speech engine cannot be loaded: {exc}") from None
    return load_fish_engine(model, device="mps", precision=proposal.precision, quantization=proposal.quantization,
                            compile=False, threads=None, cache_dir=settings.cache_dir, batch_size=proposal.batch_size,
                            planned_tokens_per_s=proposal.estimate.tokens_per_s)


def load_with_coreml_codec(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Any:
    """The fish engine on MPS with its codec decoder replaced by the Core ML conversion."""
    from . import coreml_codec

    engine = _load_fish(proposal, model, settings, engines)
    inner = innermost(engine)
    codec = getattr(inner, "codec", None)
    if codec is None or not isinstance(engine, ReplaceableDecoder):
        engine.close()
        raise EngineLoadError("the fish engine exposes no codec or decoder replacement, so the Core ML decoder "
                              "cannot be attached; the all-torch MPS proposal runs instead")
    compute_units = proposal.options.coreml_compute_units if isinstance(proposal.options, MpsOptions) else "ALL"
    converted = coreml_codec.load_or_convert(codec, model.files["codec"], settings.cache_dir)
    engine.replace_codec_decoder(coreml_codec.CoreMLDecoder(converted, compute_units), backend=scoring.COREML_ENGINE)
    return engine
