"""voxfit hooks for Windows Subsystem for Linux.

* detect       -> :mod:`voxfit_wsl.probe` (WSL1 vs WSL2, GPU path, Windows drives), read under a root path
* score_config -> a hook wrapper (:mod:`voxfit_wsl.wrapper`) adjusting the CUDA plugin's proposals
* prepare_env  -> /usr/lib/wsl/lib on LD_LIBRARY_PATH for a CUDA run when it is missing
"""

from __future__ import annotations

import os
from typing import Generator, Optional

from voxfit.sdk import Detection, EnvChange, HardwareProfile, ModelSpec, PlanInputs, Proposal, Registry, hookimpl

from . import probe, wrapper

VOXFIT_HOOK_API = "2.1"


@hookimpl
def plan_inputs() -> PlanInputs:
    return PlanInputs(environ=["WSL_DISTRO_NAME", "LD_LIBRARY_PATH"], paths=probe.paths_read())


@hookimpl
def detect() -> Optional[Detection]:
    info = probe.probe()
    if info.kind is None:
        return None
    flags = {"wsl": info.kind, "wsl_kernel": info.kernel, "wsl_dxg": info.dxg, "wsl_libcuda": info.libcuda,
             "wsl_windows_mounts": ",".join(info.windows_mounts)}
    if info.distro:
        flags["wsl_distro"] = info.distro
    return Detection(flags=flags, notes=info.notes)


@hookimpl(wrapper=True)
def score_config(model: ModelSpec, hardware: HardwareProfile,
                 engines: Registry) -> Generator[None, list[Proposal], list[Proposal]]:
    proposals = yield
    return wrapper.adjust(proposals, model, hardware, engines)


@hookimpl
def prepare_env(proposal: Proposal, hardware: HardwareProfile) -> Optional[list[EnvChange]]:
    if hardware.flags.get("wsl") != "wsl2" or proposal.device_family != "cuda":
        return None
    if not hardware.flags.get("wsl_libcuda"):
        return None
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if probe.WSL_LIB in current:
        return None
    return [EnvChange(
        kind="prepend_path", key="LD_LIBRARY_PATH", value=probe.WSL_LIB,
        reason="WSL2's CUDA driver (libcuda.so from the Windows NVIDIA driver) lives in /usr/lib/wsl/lib, which "
               "was not on the library path; the dynamic loader reads it at process start, so it reaches worker "
               "processes started from here (in this process ld.so.conf's ld.wsl.conf normally lists it)",
    )]
