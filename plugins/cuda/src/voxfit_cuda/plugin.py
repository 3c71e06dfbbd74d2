"""voxfit hooks for NVIDIA GPUs: NVML detection, Fish Speech proposals, GPU environment, loading.

Each hook is a thin door into its module:

* plan_inputs   -> what detect and prepare_env read (visible GPUs, device nodes, driver)
* detect        -> :mod:`voxfit_cuda.nvml_probe` (NVML only, never torch)
* score_config  -> :mod:`voxfit_cuda.scoring`    (memory fit, precision, int8, compile, speed, load)
* prepare_env   -> :mod:`voxfit_cuda.env`        (narrow or hide GPUs, allocator settings)
* load_engine   -> :mod:`voxfit_cuda.loader`     (fish-torch on the chosen GPU, sampled by NVML)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from voxfit.sdk import (
    Detection,
    DeviceFamilyInfo,
    EnvChange,
    HardwareProfile,
    ModelSpec,
    PlanInputs,
    Proposal,
    Registry,
    Settings,
    hookimpl,
)

from . import env, nvml_probe, scoring
from .proposal_options import CudaOptions

VOXFIT_HOOK_API = "2.1"
NAME = "cuda"  # the entry-point name; the core stamps proposals with it
PROPOSAL_OPTIONS = CudaOptions  # which GPU each proposal runs on, as load_engine and prepare_env read it


@hookimpl
def register_device_families(register: Callable[[DeviceFamilyInfo], None]) -> None:
    # A replica running on one NVIDIA GPU holds one of the scheduler's "GPU" resources (Ray counts them so).
    register(DeviceFamilyInfo(name="cuda", description="NVIDIA GPUs through CUDA (found with NVML)",
                              cluster_resource="GPU"))


@hookimpl
def plan_inputs() -> PlanInputs:
    # What NVML and the container runtime decide from: which GPUs are visible, which device nodes exist, which
    # driver answers; and the allocator setting prepare_env keeps. A GPU hidden or shown again means a new plan.
    return PlanInputs(
        environ=["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", env.ALLOC_CONF],
        paths=["/proc/driver/nvidia/version", "/dev/dxg"],
        globs=["/dev/nvidia*"],
    )


@hookimpl
def detect() -> Optional[Detection]:
    try:
        import pynvml
    except ImportError:
        return Detection(notes=["nvidia-ml-py (pynvml) is not installed; NVIDIA GPUs cannot be detected"])
    return nvml_probe.probe(pynvml, os.environ)


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile, settings: Settings, engines: Registry) -> list[Proposal]:
    return scoring.propose_all(model, hardware, settings, engines)


@hookimpl
def prepare_env(proposal: Proposal, hardware: HardwareProfile, settings: Settings) -> list[EnvChange]:
    return env.env_changes(proposal, hardware, settings, os.environ)


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Optional[Any]:
    from . import loader  # the heavy part (torch, fish_speech) is imported only past this point

    return loader.load(proposal, model, engines, cache_dir=settings.cache_dir)
