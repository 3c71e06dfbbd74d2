"""ttsfw hooks for Apple Silicon GPUs (Metal Performance Shaders).

* detect        -> :mod:`ttsfw_mps.sysinfo` (platform, sysctl, ioreg, vm_stat; torch only in a child process)
* score_config  -> :mod:`ttsfw_mps.scoring` (fp16, unified-memory fit, bandwidth-based speed)
* prepare_env   -> :mod:`ttsfw_mps.env`     (spawn, MPS fallback, allocator watermarks)
* load_engine   -> fish-torch on "mps", optionally with :mod:`ttsfw_mps.coreml_codec`
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ttsfw import hookimpl
from ttsfw.errors import EngineLoadError
from ttsfw.models import AcceleratorDevice, Detection, EnvChange, HardwareProfile, ModelSpec, Proposal
from ttsfw.settings import Settings

from . import env, scoring, sysinfo

TTSFW_HOOK_API = "1.0"
NAME = "mps"


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
def score_config(model: ModelSpec, hardware: HardwareProfile) -> list[Proposal]:
    return scoring.propose_all(model, hardware)


@hookimpl
def prepare_env(proposal: Proposal) -> list[EnvChange]:
    return env.env_changes(proposal, os.environ)


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings) -> Optional[Any]:
    if proposal.plugin != NAME:
        return None
    try:
        from ttsfw.engines.fish_torch import load_fish_engine
    except ImportError as exc:
        raise EngineLoadError(f"the Fish Speech engine cannot be imported: {exc}") from None
    engine = load_fish_engine(model, device="mps", precision=proposal.precision, quantization=proposal.quantization,
                              compile=False, threads=None, cache_dir=settings.cache_dir)
    if proposal.engine == scoring.COREML_ENGINE:
        _attach_coreml_codec(engine, model, settings, str(proposal.options.get("coreml_compute_units", "ALL")))
    return engine


def _attach_coreml_codec(engine: Any, model: ModelSpec, settings: Settings, compute_units: str) -> None:
    from . import coreml_codec

    codec = getattr(engine, "codec", None)
    replace = getattr(engine, "replace_codec_decoder", None)
    if codec is None or replace is None:
        engine.close()
        raise EngineLoadError("the fish engine exposes no codec / replace_codec_decoder, so the Core ML decoder "
                              "cannot be attached; the all-torch MPS proposal runs instead")
    converted = coreml_codec.load_or_convert(codec, model.files["codec"], settings.cache_dir)
    replace(coreml_codec.CoreMLDecoder(converted, compute_units), backend=scoring.COREML_ENGINE)
